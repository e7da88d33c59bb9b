"""The live side of the serve benchmark (benchmarks/serve.py): a `dwserve serve` subprocess
per configuration (`server`), one OIP v2 request as bytes (`infer_request`), and the server's
own numbers read back from /metrics (`scrape`, then `impl_view` / `server_side` on the delta).

    with server(["mobilenet_v2"], 8, "cpu") as url:
        before = scrape(url)
        ...                                          # load: benchmarks/http_load.py
        side = server_side(before, scrape(url), "mobilenet_v2", "auto")
"""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
IMAGE_SHAPE = (1, 3, 224, 224)
LFM2_PROMPT_TOKENS = 16     # a short prompt: where batching pays most on CPU (weights read once)


# --- servers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(models: list[str], max_batch_size: int, device: str, extra: list[str] = (), timeout: float = 600,
           torch_threads: int | None = None):
    port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--device", device,
           "--max-batch-size", str(max_batch_size), "--max-queue-delay-ms", "5", "--max-queue-size", "256",
           # On CPU the depthwise timer needs no device sync, so timing every forward is free
           # and pairs each depthwise sample with its own forward; on GPU sample every 4th.
           "--depthwise-sample-every", "1" if device == "cpu" else "4", "--log-level", "warning", *extra]
    for m in models:
        cmd += ["--model", m]
    if torch_threads:
        cmd += ["--torch-threads", str(torch_threads)]
    # Output to a file, not a pipe: nobody reads a pipe during the load, and a full one (64 KiB)
    # would block the next server thread that logs.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited ({proc.returncode}): {log.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# --- requests -----------------------------------------------------------------------------

def infer_request(model: str, arr: np.ndarray, binary: bool, impl: str | None = None):
    """-> (path, body bytes, headers) for one OIP v2 request."""
    name, dtype = ("input", "FP32") if model == "mobilenet_v2" else ("input_ids", "INT64")
    tensor = {"name": name, "shape": list(arr.shape), "datatype": dtype}
    req = {"inputs": [tensor], "outputs": [{"name": "logits", "parameters": {"binary_data": binary}}]}
    if impl:
        req["parameters"] = {"depthwise_impl": impl}
    if binary:
        tensor["parameters"] = {"binary_data_size": arr.nbytes}
        head = json.dumps(req).encode()
        return (f"/v2/models/{model}/infer", head + arr.tobytes(),
                {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
    tensor["data"] = arr.reshape(-1).tolist()
    return f"/v2/models/{model}/infer", json.dumps(req).encode(), {"Content-Type": "application/json"}


# --- /metrics -----------------------------------------------------------------------------

def scrape(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def impl_view(before: dict, after: dict, model: str, impl: str) -> dict:
    """Per-impl numbers from the /metrics delta: the before/after an operator would graph."""
    def delta(name, **labels):
        key = (name, tuple(sorted({"model": model, **labels}.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    n = delta("dwserve_compute_duration_seconds_count", impl=impl)
    dn = delta("dwserve_depthwise_duration_seconds_count", impl=impl)
    compute = delta("dwserve_compute_duration_seconds_sum", impl=impl) / n if n else None
    depthwise = delta("dwserve_depthwise_duration_seconds_sum", impl=impl) / dn if dn else None
    # The window's own mean: launches_total and forwards_total move together (service/runtime.py).
    # Not the launches_per_forward gauge: it holds the forward counted last, which can be a batch
    # of another size from an earlier scenario.
    forwards = delta("dwserve_forwards_total", impl=impl)
    kinds = {dict(k[1])["kind"] for k in after if k[0] == "dwserve_kernel_launches_total"
             and dict(k[1]).get("model") == model and dict(k[1]).get("impl") == impl}
    launches = {kind: delta("dwserve_kernel_launches_total", impl=impl, kind=kind) / forwards
                for kind in sorted(kinds)} if forwards else {}
    return {"forwards": n, "compute_mean_s": compute, "depthwise_mean_s": depthwise,
            "depthwise_share": depthwise / compute if compute and depthwise is not None else None,
            "launches_per_forward": launches}


def server_side(before: dict, after: dict, model: str, impl: str) -> dict:
    """Means over the window from /metrics: the guard's request time and the forward time
    (warm-up requests included): the overhead without any client in it."""
    def total(sample: str, scrape: dict) -> float:
        """Summed over the series of `model` and `impl`, whatever their other labels (route)."""
        return sum(v for (name, labels), v in scrape.items() if name == sample
                   and dict(labels).get("model") == model and dict(labels).get("impl") == impl)

    def mean(name):
        n = total(f"{name}_count", after) - total(f"{name}_count", before)
        return (total(f"{name}_sum", after) - total(f"{name}_sum", before)) / n if n else None
    request, compute = mean("dwserve_request_duration_seconds"), mean("dwserve_compute_duration_seconds")
    return {"request_mean_s": request, "compute_mean_s": compute,
            "overhead_vs_compute": (request - compute) / compute if request and compute else None}
