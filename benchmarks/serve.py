"""Serving benchmark (`dwserve bench serve`): what the HTTP layer, batching and the depthwise
impl cost end to end, on a live loopback server.

Scenarios (mobilenet_v2 unless noted; each bounded by --duration seconds after a warm-up):
  latency_binary / latency_json   1 client, batch 1: client p50/p95/p99 vs server compute
                                  (Server-Timing), i.e. the protocol + queue overhead
  latency_grpc                    the same over OIP v2 gRPC (benchmarks/grpc_load.py)
  batching_on / batching_off      --clients concurrent clients, batch-1 requests, against a
                                  server with --max-batch-size (8) and one with 1, measured
                                  in --rounds turns (so drift of the box hits both alike)
  batching_{on,off}_lfm2          the same for lfm2 with a 16-token prompt per request
  impl_<name>                     per_group vs auto for mobilenet_v2 and lfm2 (per-request
                                  `parameters.depthwise_impl`), then read back from /metrics:
                                  compute mean, depthwise share, launches per forward
Writes benchmarks/results/serve-<tag>.json, .md and .png. Starts its own servers (two
processes: batching on / off) unless --url is given (then batching_off needs --url-batch1).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:            # `python benchmarks/serve.py` puts benchmarks/ first
    sys.path.insert(0, str(REPO))

from benchmarks.grpc_load import grpc_infer_request, run_grpc_load  # noqa: E402
from benchmarks.http_load import run_interleaved, run_load  # noqa: E402
from benchmarks.results_files import write_results  # noqa: E402

IMAGE_SHAPE = (1, 3, 224, 224)
LFM2_PROMPT_TOKENS = 16     # a short prompt: where batching pays most on CPU (weights read once)


# --- servers ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(models: list[str], max_batch_size: int, device: str, extra: list[str] = (), timeout: float = 600,
           torch_threads: int | None = None):
    port = _free_port()
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
    launches = {dict(k[1])["kind"]: v for k, v in after.items() if k[0] == "dwserve_kernel_launches_per_forward"
                and dict(k[1]).get("model") == model and dict(k[1]).get("impl") == impl}
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


# --- report -------------------------------------------------------------------------------

def acceptance(res: dict) -> dict:
    out = {}
    for protocol in ("binary", "grpc"):   # REST with binary tensors; gRPC
        lat = res["scenarios"].get("latency_" + protocol)
        if lat:
            overhead = (lat["p50_s"] - lat["compute_p50_s"]) / lat["compute_p50_s"]
            out[protocol + "_b1_overhead_vs_compute"] = {"value": overhead, "target": "<= 0.15",
                                                         "pass": overhead <= 0.15}
    for suffix in ("", "_lfm2"):          # mobilenet_v2 images; lfm2 short prompts
        on, off = res["scenarios"].get("batching_on" + suffix), res["scenarios"].get("batching_off" + suffix)
        if on and off:
            speedup = on["throughput_rps"] / off["throughput_rps"]
            p99 = on["p99_s"] / off["p99_s"]
            out["batching_throughput_speedup" + suffix] = {"value": speedup, "target": ">= 1.8", "pass": speedup >= 1.8}
            out["batching_p99_ratio" + suffix] = {"value": p99, "target": "<= 1.5", "pass": p99 <= 1.5}
    return out


def cpu_model() -> str | None:
    """The CPU's name (Linux), so results from different boxes are told apart."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.1f}"


def _batching_reading(what: str, on: dict, off: dict) -> str:
    rows = on.get("batch_rows_mean") or 1.0
    per_row = on["compute_p50_s"] / rows
    return (f"{what}: batching on ran forwards of ~{rows:.1f} rows at a compute p50 of "
            f"{_ms(on['compute_p50_s'])} ms, i.e. ~{per_row * 1e3:.1f} ms per row, against "
            f"{_ms(off['compute_p50_s'])} ms for one row with batching off. Both servers are compute-bound "
            f"at {on['clients']} clients, so the throughput gain of batching is bounded by how much "
            f"cheaper a row is in a batched forward: here {off['compute_p50_s'] / per_row:.2f}x "
            f"(measured gain {on['throughput_rps'] / off['throughput_rps']:.2f}x).")


def write_markdown(res: dict, path: Path) -> None:
    lines = [f"# Serving benchmark ({res['device']})", "",
             f"{res['timestamp']}, torch {res['torch']}, {res['cpu_count']} CPU cores"
             f"{' (' + res['cpu_model'] + ')' if res.get('cpu_model') else ''}, server torch threads "
             f"{res['torch_threads'] or 'default'}, batching_on max_batch_size {res['max_batch_size']}, "
             f"{res['duration_s']} s per scenario after {res['warmup_s']} s warm-up, load average "
             f"{res['loadavg_start'][0]:.1f} at start and {res['loadavg_end'][0]:.1f} at the end. "
             "Latency is client-side (loopback, keep-alive); compute is the server's forward time "
             "(Server-Timing).", "",
             "| scenario | clients | requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | compute p50 ms | queue p50 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in res["scenarios"].items():
        lines.append(f"| {name} | {s['clients']} | {s['requests']} | {s['throughput_rps']:.2f} | {_ms(s['p50_s'])} | "
                     f"{_ms(s['p95_s'])} | {_ms(s['p99_s'])} | {_ms(s['compute_p50_s'])} | {_ms(s['queue_p50_s'])} |")
    side = (res["scenarios"].get("latency_binary") or {}).get("server_side")
    if side and side["overhead_vs_compute"] is not None:
        lines += ["", f"Server side of latency_binary, from /metrics (means): {_ms(side['request_mean_s'])} ms per "
                  f"request in the server, {_ms(side['compute_mean_s'])} ms of it the forward: overhead "
                  f"{side['overhead_vs_compute']:.1%} of compute without any client time in it."]
    protocols = [(name, res["scenarios"][key]) for name, key in
                 (("REST binary", "latency_binary"), ("gRPC", "latency_grpc"), ("REST JSON", "latency_json"))
                 if key in res["scenarios"]]
    if len(protocols) > 1:
        lines += ["", "One client, one 224x224 image per request, end-to-end p50 over the forward's p50: " +
                  ", ".join(f"{name} +{_ms(s['p50_s'] - s['compute_p50_s'])} ms "
                            f"({(s['p50_s'] - s['compute_p50_s']) / s['compute_p50_s']:.0%})"
                            for name, s in protocols) + "."]
    lines += ["", "## per_group vs auto, as /metrics shows it", "",
              "| model | impl | forwards | compute mean ms | depthwise mean ms | depthwise share | launches/forward (aten_ops) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for key, v in res["impls"].items():
        model, impl = key.split("/")
        share = "-" if v["depthwise_share"] is None else f"{v['depthwise_share']:.0%}"
        lines.append(f"| {model} | {impl} | {v['forwards']:.0f} | {_ms(v['compute_mean_s'])} | "
                     f"{_ms(v['depthwise_mean_s'])} | {share} | {v['launches_per_forward'].get('aten_ops', '-')} |")
    sc = res["scenarios"]
    if sc.get("batching_on") and sc.get("batching_off"):
        lines += ["", "## Reading it", "",
                  _batching_reading("mobilenet_v2 (one 224x224 image per request)", sc["batching_on"],
                                    sc["batching_off"]) +
                  " A batched row is cheaper because the late stages (small maps, big weights) read "
                  "each weight once for the whole batch, while the early stages run in cache-sized "
                  "row chunks (models/row_chunks.py): over the whole batch their activations spill "
                  "to DRAM and a batch-8 row was only 1.44x cheaper than a row alone in the committed "
                  "benchmarks/results/row-chunks-cpu.md (an AMD EPYC run)."]
        if sc.get("batching_on_lfm2") and sc.get("batching_off_lfm2"):
            lines += ["", _batching_reading(f"lfm2 ({LFM2_PROMPT_TOKENS}-token prompt per request)",
                                            sc["batching_on_lfm2"], sc["batching_off_lfm2"]) +
                      " A short prompt's forward is mostly reading the weights; a batch reads them once "
                      "for all its rows."]
        for suffix in ("", "_lfm2"):
            on, off = sc.get("batching_on" + suffix), sc.get("batching_off" + suffix)
            if on and off and on.get("round_rps") and off.get("round_rps"):
                per_round = ", ".join(f"{a / b:.2f}x" for a, b in zip(on["round_rps"], off["round_rps"]))
                lines += ["", f"batching_on{suffix} and batching_off{suffix} were measured in "
                          f"{len(on['round_rps'])} turns of {res['duration_s'] / len(on['round_rps']):.0f} s "
                          f"each (the table pools them); throughput ratio per turn: {per_round}."]
        lines += ["", "Clients are threads of the benchmark process on the same machine, one keep-alive "
                  "connection each through benchmarks/http_load.py (a raw-socket client: less client "
                  "time in the end-to-end latency than http.client or httpx), so their CPU still "
                  "competes with the server's."]
    lines += ["", "## Acceptance", "", "| check | value | target | pass |", "|---|---:|---|---|"]
    for name, a in res["acceptance"].items():
        lines.append(f"| {name} | {a['value']:.3f} | {a['target']} | {'yes' if a['pass'] else 'NO'} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = list(res["scenarios"])
    x = np.arange(len(names))
    for i, q in enumerate(("p50_s", "p95_s", "p99_s")):
        axes[0].bar(x + (i - 1) * 0.27, [res["scenarios"][n][q] * 1e3 for n in names], 0.27, label=q[:3])
    axes[0].set_xticks(x, names, rotation=20, ha="right")
    axes[0].set_ylabel("latency (ms)")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("client latency")
    axes[1].bar(names, [res["scenarios"][n]["throughput_rps"] for n in names], color="tab:green")
    axes[1].set_ylabel("requests / s")
    axes[1].tick_params(axis="x", rotation=20)
    axes[1].set_title("throughput")
    keys = list(res["impls"])
    comp = [(res["impls"][k]["compute_mean_s"] or 0) * 1e3 for k in keys]
    dw = [(res["impls"][k]["depthwise_mean_s"] or 0) * 1e3 for k in keys]
    axes[2].bar(keys, comp, label="compute mean", color="tab:gray")
    axes[2].bar(keys, dw, label="of which depthwise", color="tab:red")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("ms per forward")
    axes[2].tick_params(axis="x", rotation=20)
    axes[2].legend()
    axes[2].set_title("per_group vs auto (/metrics)")
    fig.suptitle(f"dwserve serving benchmark, {res['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="target a live server (both models) instead of starting one")
    p.add_argument("--url-batch1", help="with --url: a server with --max-batch-size 1 for batching_off")
    p.add_argument("--grpc-target", help="with --url: its gRPC HOST:PORT (--grpc-port) for latency_grpc")
    p.add_argument("--device", default="cpu")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=4.0, help="unmeasured seconds before each scenario")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4,
                   help="batching on/off are measured in this many turns of duration/rounds s each")
    p.add_argument("--max-batch-size", type=int, default=8, help="the batching_on server's limit (service default 8)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="server torch threads (default: torch's); 1 keeps a shared 2-core box stable")
    p.add_argument("--impl-requests", type=int, default=8, help="at most this many requests per impl scenario")
    p.add_argument("--impl-budget", type=float, default=25.0, help="and at most this many seconds (>= 2 requests)")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--tag", help="file suffix (default: the device)")
    p.add_argument("--from-json", type=Path, help="only re-render .md and .png from a results JSON")
    args = p.parse_args(argv)
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        write_markdown(res, args.from_json.with_suffix(".md"))
        write_plot(res, args.from_json.with_suffix(".png"))
        return 0
    import torch

    rng = np.random.default_rng(0)
    image = rng.standard_normal(IMAGE_SHAPE).astype(np.float32)
    res = {"device": args.device, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "cpu_model": cpu_model(),
           "torch_threads": args.torch_threads, "max_batch_size": args.max_batch_size, "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup, "scenarios": {}, "impls": {}}
    t0 = time.time()
    res["loadavg_start"] = os.getloadavg()  # the CI box is shared: say how busy it was

    # lfm2 requests: one 16-token prompt each (ids below the byte vocabulary of every preset)
    prompt = rng.integers(0, 256, size=(1, LFM2_PROMPT_TOKENS)).astype(np.int64)

    def batching(url: str, url_b1: str | None):
        """batching on vs off, in turns (http_load.run_interleaved) when both servers are up."""
        sc = res["scenarios"]
        for suffix, req in (("", infer_request("mobilenet_v2", image, True)),
                            ("_lfm2", infer_request("lfm2", prompt, True))):
            print(f"{args.clients} clients: batching on{' vs off' if url_b1 else ''}{suffix}", flush=True)
            if url_b1 is None:
                sc["batching_on" + suffix] = run_load(url, req, args.clients, args.duration, args.warmup)
                continue
            both = run_interleaved({"on": url, "off": url_b1}, req, args.clients, args.duration,
                                   args.warmup, args.rounds)
            sc["batching_on" + suffix], sc["batching_off" + suffix] = both["on"], both["off"]

    def measure(url: str, url_batch1: str | None, grpc_target: str | None):
        sc = res["scenarios"]
        print("latency (1 client, batch 1): binary, json, grpc", flush=True)
        before = scrape(url)
        sc["latency_binary"] = run_load(url, infer_request("mobilenet_v2", image, True), 1, args.duration, args.warmup)
        sc["latency_binary"]["server_side"] = server_side(before, scrape(url), "mobilenet_v2", "auto")
        sc["latency_json"] = run_load(url, infer_request("mobilenet_v2", image, False), 1, args.duration, args.warmup)
        if grpc_target:
            sc["latency_grpc"] = run_grpc_load(grpc_target, grpc_infer_request("mobilenet_v2", image), 1,
                                               args.duration, args.warmup)
        batching(url, url_batch1)
        vocab = httpx.get(url + "/v2/models/lfm2").json()["outputs"][0]["shape"][-1]
        inputs = {"mobilenet_v2": image, "lfm2": rng.integers(0, min(vocab, 256), size=(1, 64)).astype(np.int64)}
        for model, arr in inputs.items():
            for impl in ("per_group", "auto"):
                print(f"impl {model}/{impl}", flush=True)
                req = infer_request(model, arr, True, impl)
                with httpx.Client(base_url=url, timeout=300) as c:
                    c.post(req[0], content=req[1], headers=req[2])  # warm: compile, first-shape launch count
                    before = scrape(url)
                    t_end, n = time.perf_counter() + args.impl_budget, 0
                    while n < args.impl_requests and (n < 2 or time.perf_counter() < t_end):
                        c.post(req[0], content=req[1], headers=req[2]).raise_for_status()
                        n += 1
                after = scrape(url)
                res["impls"][f"{model}/{impl}"] = impl_view(before, after, model, impl)

    if args.url:
        measure(args.url, args.url_batch1, args.grpc_target)
    else:
        # Both servers up at once, so batching on and off are measured in turns; the batch-1
        # server idles (no spinning threads) while the other is measured.
        grpc_port = _free_port()
        with server(["lfm2", "mobilenet_v2"], 1, args.device, torch_threads=args.torch_threads) as url_b1, \
                server(["lfm2", "mobilenet_v2"], args.max_batch_size, args.device, ["--grpc-port", str(grpc_port)],
                       torch_threads=args.torch_threads) as url:
            measure(url, url_b1, f"127.0.0.1:{grpc_port}")
    res["scenarios"] = {k: res["scenarios"][k] for k in
                        ("latency_binary", "latency_json", "latency_grpc", "batching_on", "batching_off",
                         "batching_on_lfm2", "batching_off_lfm2") if k in res["scenarios"]}
    res["acceptance"] = acceptance(res)
    res["wall_s"] = time.time() - t0
    res["loadavg_end"] = os.getloadavg()
    md = write_results(args.out_dir, f"serve-{args.tag or args.device}", res, write_markdown, write_plot)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
