"""The service as a process: `dwserve serve` with the real models on a free loopback port
(tritonclient JSON + binary for both models, the malformed battery, a bounded schemathesis
run, metrics, /v1), and an in-process uvicorn for tritonclient without a subprocess. The
fake-model server processes (SIGTERM, overload, clients that leave) are test_service_process.py's.

One server process per fixture, shared by the module; small limits keep it fast on 2 cores.
"""
import contextlib
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from server_process import cli_flags, free_port, server_process
from service.bad_requests import malformed_requests
from error_bodies import error_message

httpclient = pytest.importorskip("tritonclient.http")
REPO = Path(__file__).resolve().parent.parent
REAL = importlib.util.find_spec("models.registry") is not None
LIMITS = {"max-sequence-length": 64, "max-batch-size": 4, "max-body-bytes": 8 * 2**20, "max-new-tokens": 16}
# The real server prefills prompts 4 tokens per decode step: /v1/generate's tests then cover
# prompts joining in chunks while other generations decode.
REAL_FLAGS = {**LIMITS, "prefill-chunk-tokens": 4}


REAL_GRPC_PORT = []   # the real server's gRPC port, once started


@pytest.fixture(scope="module")
def real_server():
    if not REAL:
        pytest.skip("models.registry is not available yet")
    grpc_port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--log-level", "warning", *cli_flags(REAL_FLAGS),
           "--grpc-port", str(grpc_port)]
    with server_process(cmd, timeout=400) as (url, proc):
        REAL_GRPC_PORT[:] = [grpc_port]
        yield url


# --- tritonclient round trips --------------------------------------------------------------

def _triton_infer(url: str, model: str, arr: np.ndarray, binary: bool, impl=None):
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=120)
    meta = client.get_model_metadata(model)
    spec, out = meta["inputs"][0], meta["outputs"][0]
    inp = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
    inp.set_data_from_numpy(arr, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(out["name"], binary_data=binary)]
    result = client.infer(model, [inp], outputs=outputs,
                          parameters={"depthwise_impl": impl} if impl else None)
    assert client.is_server_ready() and client.is_model_ready(model)
    return result.as_numpy(out["name"]), result.get_response()


def _inputs(rng, model, vocab=None):
    if model == "mobilenet_v2":
        return rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    return rng.integers(0, vocab, size=(2, 7)).astype(np.int64)


@pytest.mark.parametrize("model", [pytest.param("mobilenet_v2", id="mobilenet_v2"), pytest.param("lfm2", id="lfm2")])
def test_tritonclient_json_and_binary_agree_on_real_models(real_server, model):
    vocab = httpx.get(f"{real_server}/v2/models/lfm2").json()["outputs"][0]["shape"][-1]
    x = _inputs(np.random.default_rng(), model, vocab)
    from_json, _ = _triton_infer(real_server, model, x, binary=False)
    from_binary, response = _triton_infer(real_server, model, x, binary=True, impl="slice_sum")
    assert response["parameters"]["depthwise_impl"] == "slice_sum"
    assert from_json.shape == (2, vocab if model == "lfm2" else 1000) and from_json.dtype == np.float32
    # Different impls and batch compositions: equal to float tolerance, not bitwise.
    np.testing.assert_allclose(from_json, from_binary, rtol=1e-3, atol=1e-3)
    single, _ = _triton_infer(real_server, model, x[1:], binary=True)   # row 1 alone == row 1 in a batch
    np.testing.assert_allclose(single[0], from_binary[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("model", [pytest.param("mobilenet_v2", id="mobilenet_v2"), pytest.param("lfm2", id="lfm2")])
def test_tritonclient_grpc_equals_rest_on_real_models(real_server, model):
    """The same rows over gRPC (tritonclient.grpc) and REST binary: same logits, same impl."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    vocab = httpx.get(f"{real_server}/v2/models/lfm2").json()["outputs"][0]["shape"][-1]
    x = _inputs(np.random.default_rng(), model, vocab)
    over_rest, _ = _triton_infer(real_server, model, x, binary=True, impl="slice_sum")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{REAL_GRPC_PORT[0]}")
    assert client.is_server_ready() and client.is_model_ready(model)
    spec = client.get_model_metadata(model, as_json=True)["inputs"][0]
    inp = grpcclient.InferInput(spec["name"], list(x.shape), spec["datatype"])
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], parameters={"depthwise_impl": "slice_sum"}, client_timeout=120)
    assert result.get_response().parameters["depthwise_impl"].string_param == "slice_sum"
    np.testing.assert_allclose(result.as_numpy("logits"), over_rest, rtol=1e-3, atol=1e-3)


@contextlib.contextmanager
def in_process_server(app, timeout: float = 30):
    """uvicorn serving `app` in a thread of this process on a free loopback port -> its URL,
    once /v2/health/ready is 200."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def test_tritonclient_against_in_process_uvicorn():
    """The same client against the app served by uvicorn in this process (fake models)."""
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models, reference_logits

    models = fake_models()
    with in_process_server(create_app(Settings(), models=models, hooks=fake_hooks())) as url:
        x = np.random.default_rng().standard_normal((1, 3, 224, 224)).astype(np.float32)
        import torch
        want = reference_logits(torch.from_numpy(x), models["mobilenet_v2"].weight).numpy()
        for binary in (False, True):
            got, _ = _triton_infer(url, "mobilenet_v2", x, binary=binary, impl="native")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- bad input against the real server -----------------------------------------------------

def test_malformed_battery_against_real_server(real_server):
    vocab = httpx.get(f"{real_server}/v2/models/lfm2").json()["outputs"][0]["shape"][-1]
    cases = malformed_requests(vocab, LIMITS["max-sequence-length"], LIMITS["max-batch-size"], LIMITS["max-body-bytes"])
    assert len(cases) >= 30
    failures = []
    with httpx.Client(base_url=real_server, timeout=60) as client:
        for name, method, path, kwargs, status in cases:
            r = client.request(method, path, **kwargs)
            ok = 400 <= r.status_code < 500 and (status is None or r.status_code == status)
            try:
                ok = ok and bool(error_message(r))
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                failures.append((name, r.status_code, r.text[:200]))
        assert not failures, failures
        assert client.get("/v2/health/ready").status_code == 200
        metrics = client.get("/metrics").text
    assert 'status="400"' in metrics and 'status="413"' in metrics and 'status="404"' in metrics
    # status 500 is exposed at 0 from a model's first count (service/metrics.py PRIMED_STATUSES)
    fives = [l for l in metrics.splitlines() if l.startswith("dwserve_requests_total") and 'status="500"' in l]
    assert fives and all(l.endswith(" 0.0") for l in fives), fives


def test_schemathesis_finds_no_server_error(real_server, tmp_path):
    # The CLI sits beside this interpreter (a venv not on PATH, as `make test` runs it).
    here = str(Path(sys.executable).parent)
    st = shutil.which("st", path=here) or shutil.which("schemathesis", path=here) \
        or shutil.which("st") or shutil.which("schemathesis")
    assert st, "schemathesis CLI not found: pip install -e '.[dev]'"
    proc = subprocess.run(
        [st, "run", f"{real_server}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "12",
         "--max-time", "60", "--workers", "1", "--seed", "1", "--request-timeout", "60"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)  # its cache dir goes there
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert httpx.get(f"{real_server}/v2/health/ready").status_code == 200


# --- /v1 and metrics on the real models ----------------------------------------------------

def test_v1_classify_and_generate_real(real_server):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, format="JPEG")
    r = httpx.post(f"{real_server}/v1/classify?top_k=5&depthwise_impl=native",
                   files={"file": ("x.jpg", buf.getvalue(), "image/jpeg")}, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["labels"]) == 5 and r.json()["parameters"]["depthwise_impl"] == "native"
    body = {"prompt": "hello", "max_new_tokens": 4, "seed": 3}
    a = httpx.post(f"{real_server}/v1/generate", json=body, timeout=120).json()
    assert a["usage"]["completion_tokens"] <= 4 and len(a["token_ids"]) == a["usage"]["completion_tokens"]
    with httpx.stream("POST", f"{real_server}/v1/generate", json={**body, "stream": True}, timeout=120) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[-1]["token_ids"] == a["token_ids"]  # greedy: streamed == one-shot
    # The demo model emits arbitrary bytes: the streamed pieces still join to the final text.
    body = {"input_ids": [200, 201, 202], "max_new_tokens": 16, "ignore_eos": True}
    final = httpx.post(f"{real_server}/v1/generate", json=body, timeout=120).json()["text"]
    with httpx.stream("POST", f"{real_server}/v1/generate", json={**body, "stream": True}, timeout=120) as r:
        pieces = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(p["text"] for p in pieces[:-1]) == pieces[-1]["text"] == final


def test_concurrent_generations_are_batched_and_each_gets_its_own_tokens(real_server):
    """Six greedy requests at once share decode steps (continuous batching; prompts of 3-13
    tokens join 4 columns per step) and get the tokens each gets when sent alone."""
    prompts = [[int(t) for t in np.random.default_rng(i).integers(0, 256, size=3 + 2 * i)] for i in range(6)]

    def ask(ids):
        body = {"input_ids": ids, "max_new_tokens": 10, "ignore_eos": True}
        r = httpx.post(f"{real_server}/v1/generate", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    def steps():
        text = httpx.get(f"{real_server}/metrics").text
        get = lambda name: float(next(l for l in text.splitlines()  # noqa: E731
                                      if l.startswith(f'dwserve_decode_batch_size_{name}{{model="lfm2"}}')).split()[-1])
        return get("sum"), get("count")

    s0, n0 = steps()
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(ask, prompts))
    s1, n1 = steps()
    alone = [ask(p) for p in prompts]
    assert [a["token_ids"] for a in together] == [a["token_ids"] for a in alone]
    assert all(a["usage"]["completion_tokens"] == 10 and a["finish_reason"] == "length" for a in together)
    assert s1 - s0 == 60 and n1 - n0 < 40          # 60 tokens in fewer steps than one at a time


def test_ignore_eos_generates_past_the_end_of_sequence_token(real_server):
    ids = [ord(c) for c in "depthwise convol"]       # the demo model ends this one early
    body = {"input_ids": ids, "max_new_tokens": 16}
    short = httpx.post(f"{real_server}/v1/generate", json=body, timeout=120).json()
    full = httpx.post(f"{real_server}/v1/generate", json={**body, "ignore_eos": True}, timeout=120).json()
    assert short["finish_reason"] == "stop" and short["usage"]["completion_tokens"] < 16
    assert full["finish_reason"] == "length" and full["usage"]["completion_tokens"] == 16
    assert full["token_ids"][:len(short["token_ids"])] == short["token_ids"]


def test_chat_completion_is_generate_over_the_chat_template(real_server):
    """The demo's byte-level ChatML through /v1/chat/completions: the prompt is exactly
    apply_chat_template's ids, and the greedy answer is /v1/generate's for those ids."""
    from models.lfm2.config import PRESETS
    from models.lfm2.tokenizer import ByteTokenizer
    messages = [{"role": "user", "content": "hi"}]     # 53 tokens of ChatML: the server's limit is 64
    ids = ByteTokenizer(PRESETS["lfm2-demo"]).apply_chat_template(messages)
    chat = httpx.post(f"{real_server}/v1/chat/completions", timeout=120, json={
        "messages": messages, "max_tokens": 6, "temperature": 0, "ignore_eos": True}).json()
    plain = httpx.post(f"{real_server}/v1/generate", timeout=120, json={
        "input_ids": ids, "max_new_tokens": 6, "ignore_eos": True}).json()
    assert chat["usage"]["prompt_tokens"] == len(ids) == plain["usage"]["prompt_tokens"]
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": plain["text"]}
    assert chat["usage"]["completion_tokens"] == 6


def test_per_request_impl_is_visible_in_metrics(real_server):
    x = np.random.default_rng().integers(0, 256, size=(1, 5)).astype(np.int64)
    for impl in ("per_group", "slice_sum"):
        _triton_infer(real_server, "lfm2", x, binary=True, impl=impl)
    text = httpx.get(f"{real_server}/metrics").text
    for impl in ("per_group", "slice_sum"):
        assert f'dwserve_requests_total{{impl="{impl}",model="lfm2",status="200"}}' in text
        assert f'dwserve_kernel_launches_per_forward{{impl="{impl}",kind="aten_ops",model="lfm2"}}' in text
        assert f'dwserve_compute_duration_seconds_count{{impl="{impl}",model="lfm2"}}' in text
    launches = {impl: float(next(l for l in text.splitlines() if l.startswith(
        f'dwserve_kernel_launches_per_forward{{impl="{impl}",kind="aten_ops",model="lfm2"}}')).split()[-1])
        for impl in ("per_group", "slice_sum")}
    assert launches["per_group"] > launches["slice_sum"]  # the "before" path launches per channel
