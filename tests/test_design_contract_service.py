"""DESIGN.md's public contract, section "Service" and "Metrics" (the rest of the design is
tests/test_design_contract.py's): `dwserve serve`'s flags, their DWSERVE_* variables and
defaults; the endpoints and their response shapes, in-process with the fake models
(service/testing.py); each metric's type and exact label set, base units and label values."""
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
import cli_capture
from inprocess_app import LIMITS, _image, _infer_json

POLICIES = ("per_group", "slice_sum", "compiled", "fused", "native", "auto")
captured = cli_capture.captured


# ================================================================ Service: `dwserve serve`
# Flags over env, bad values, --help: test_cli_serve_flags.py.

SERVE_FLAGS = [  # (flag, Settings field, contract default, a value to pass, what Settings holds then)
    ("--host", "host", "127.0.0.1", "0.0.0.0", "0.0.0.0"),
    ("--port", "port", 8000, "8123", 8123),
    ("--device", "device", "auto", "cpu", "cpu"),
    ("--depthwise-impl", "depthwise_impl", "auto", "per_group", "per_group"),
    ("--max-batch-size", "max_batch_size", None, "3", 3),
    ("--max-queue-delay-ms", "max_queue_delay_ms", None, "2.5", 2.5),
    ("--max-queue-size", "max_queue_size", None, "7", 7),
]


@pytest.mark.parametrize("flag, field, default, given, held", [pytest.param(*f, id=f[0][2:]) for f in SERVE_FLAGS])
def test_serve_flag_its_env_variable_and_default(flag, field, default, given, held, captured, monkeypatch):
    from service import cli
    env = "DWSERVE_" + field.upper()
    monkeypatch.delenv(env, raising=False)
    if default is not None:
        cli.main(["serve"])
        assert getattr(captured["settings"], field) == default
    cli.main(["serve", flag, given])
    assert getattr(captured["settings"], field) == held
    monkeypatch.setenv(env, given)
    cli.main(["serve"])
    assert getattr(captured["settings"], field) == held


def test_serve_choices_are_the_contracts():
    from service.cli import _serve_parser
    actions = {o: a for a in _serve_parser()._actions for o in a.option_strings}
    assert set(actions["--depthwise-impl"].choices) == set(POLICIES)
    assert set(Settings.model_fields) >= {"models"} and Settings.model_config["env_prefix"] == "DWSERVE_"
    for device in ("auto", "cpu", "cuda"):
        assert Settings(device=device).device == device


def test_model_flag_repeats_and_takes_name_eq_path_and_env(captured, monkeypatch, tmp_path):
    from service import cli
    monkeypatch.delenv("DWSERVE_MODELS", raising=False)
    cli.main(["serve"])
    assert tuple(captured["settings"].models) == ("lfm2", "mobilenet_v2")      # default models
    cli.main(["serve", "--model", "lfm2", "--model", f"mobilenet_v2={tmp_path}"])
    assert tuple(captured["settings"].models) == ("lfm2", f"mobilenet_v2={tmp_path}")
    monkeypatch.setenv("DWSERVE_MODELS", "mobilenet_v2")
    cli.main(["serve"])
    assert tuple(captured["settings"].models) == ("mobilenet_v2",)


# ================================================================ Service: endpoints
# Errors' {"error"} battery: test_service_app_bad_requests.py; 503 + Retry-After and readiness:
# test_service_app_ready_auth_overload.py; binary tensors, classify, generate (JSON and SSE):
# test_service_app_protocol.py.

@pytest.fixture(scope="module")
def app_client():
    """Fake models, every forward's depthwise time sampled, so each contract metric gets a series."""
    models = fake_models(delay_s=0.01)
    app = create_app(Settings(**LIMITS, depthwise_sample_every=1), models=models, hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client_ready(client)


@pytest.mark.parametrize("path, body", [pytest.param("/v2/health/live", {"live": True}, id="live"),
                                        pytest.param("/v2/health/ready", {"ready": True}, id="ready")])
def test_health_bodies(app_client, path, body):
    r = app_client.get(path)
    assert r.status_code == 200 and r.json() == body


@pytest.mark.parametrize("model, inputs, outputs", [
    pytest.param("mobilenet_v2", [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
                 [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}], id="mobilenet_v2"),
    pytest.param("lfm2", [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
                 [{"name": "logits", "datatype": "FP32", "shape": [-1, 96]}], id="lfm2"),   # the fake's vocab
])
def test_model_metadata_ready_and_infer_shapes(app_client, model, inputs, outputs):
    meta = app_client.get(f"/v2/models/{model}").json()
    assert meta["name"] == model and meta["inputs"] == inputs and meta["outputs"] == outputs
    assert app_client.get(f"/v2/models/{model}/ready").status_code == 200
    rows = 1 if model == "mobilenet_v2" else 2            # two images' JSON would pass the body limit
    arr = _image(np.random.default_rng(0), rows) if model == "mobilenet_v2" else np.array([[1, 2, 3], [4, 5, 6]])
    r = _infer_json(app_client, model, inputs[0]["name"], arr, inputs[0]["datatype"])
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "logits" and out["datatype"] == "FP32" and out["shape"] == [rows, outputs[0]["shape"][1]]


def test_server_metadata(app_client):
    body = app_client.get("/v2").json()
    assert body["name"] and body["version"] and isinstance(body["extensions"], list)


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in POLICIES])
def test_request_impl_overrides_and_response_says_what_ran(app_client, impl):
    r = _infer_json(app_client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl=impl)
    assert r.status_code == 200 and r.json()["parameters"]["depthwise_impl"] == impl
    r = app_client.post("/v1/generate", json={"input_ids": [1, 2], "max_new_tokens": 2, "depthwise_impl": impl})
    assert r.status_code == 200 and r.json()["parameters"]["depthwise_impl"] == impl
    text = app_client.get("/metrics").text                  # `impl` label: the policy the request ran under
    for series in (f'dwserve_requests_total{{impl="{impl}",model="lfm2",status="200"}}',
                   f'dwserve_compute_duration_seconds_count{{impl="{impl}",model="lfm2"}}',
                   f'dwserve_generated_tokens_total{{impl="{impl}",model="lfm2"}}'):
        assert series in text, series


def test_server_default_impl_is_used_and_said_when_the_request_names_none():
    app = create_app(Settings(**LIMITS, depthwise_impl="per_group"), models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        r = _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64")
        assert r.json()["parameters"]["depthwise_impl"] == "per_group"
        assert 'dwserve_requests_total{impl="per_group",model="lfm2",status="200"} 1.0' in client.get("/metrics").text


def test_generate_fields_seeded_sampling_repeats(app_client):
    body = {"input_ids": [3, 4], "max_new_tokens": 5, "temperature": 0.8, "seed": 7}
    first, again = (app_client.post("/v1/generate", json=body).json() for _ in range(2))
    assert first["token_ids"] == again["token_ids"] and len(first["token_ids"]) == 5
    assert app_client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 2, "stream": False}).status_code == 200


CONTRACT_ROUTES = [("get", "/v2/health/live"), ("get", "/v2/health/ready"), ("get", "/v2"),
                   ("get", "/v2/models/{}"), ("get", "/v2/models/{}/ready"), ("post", "/v2/models/{}/infer"),
                   ("post", "/v1/classify"), ("post", "/v1/generate")]   # /metrics is for Prometheus, not clients


@pytest.mark.parametrize("method, path", [pytest.param(m, p, id=f"{m}-{p}") for m, p in CONTRACT_ROUTES])
def test_openapi_documents_every_contract_route(app_client, method, path):
    spec = app_client.get("/openapi.json").json()
    paths = {re.sub(r"\{[^}]*\}", "{}", p): ops for p, ops in spec["paths"].items()}
    assert path in paths and method in paths[path], sorted(paths)


def test_metrics_is_prometheus_text(app_client):
    r = app_client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert any(f.name.startswith("dwserve_") for f in text_string_to_metric_families(r.text))


def _raw_reply(port: int, request: bytes) -> bytes:
    import socket
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(request)
        except ConnectionError:
            pass                                   # refused mid-send: the reply is still there
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionError, TimeoutError):
            pass
    return data


def test_4xx_the_http_protocol_answers_itself_are_json_errors_too():
    """Bad requests the app never sees (bytes that are no HTTP, a head over the size bound, one
    too slow) are answered by service/http_protocol.py: {"error": "..."} like every other 4xx
    (were text/plain)."""
    from server_process import fake_server_cmd, server_process
    with server_process(fake_server_cmd(idle_timeout_s=5.0, head_timeout_s=0.5), timeout=60) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        replies = {400: _raw_reply(port, b"NOT AN HTTP REQUEST\r\n\r\n"),
                   431: _raw_reply(port, b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (128 * 1024) + b"\r\n\r\n"),
                   408: _raw_reply(port, b"GET /v2 HTTP/1.1\r\nHost: x\r\n")}      # never finished
    for status, reply in replies.items():
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), reply[:200]
        assert b"content-type: application/json" in head.lower(), head
        assert isinstance(json.loads(body)["error"], str) and json.loads(body)["error"], body


# ================================================================ Metrics
# Series a request leaves, by name: test_service_app_metrics.py; zero-primed statuses:
# test_metrics_series.py. Here: each contract name's type and exact label set.

CONTRACT_METRICS = {   # name as exposed -> (type, labels); build_info's labels are not specified
    "dwserve_requests_total": ("counter", {"model", "impl", "status"}),
    "dwserve_request_duration_seconds": ("histogram", {"model", "impl"}),
    "dwserve_queue_duration_seconds": ("histogram", {"model"}),
    "dwserve_compute_duration_seconds": ("histogram", {"model", "impl"}),
    "dwserve_depthwise_duration_seconds": ("histogram", {"model", "impl"}),
    "dwserve_batch_size": ("histogram", {"model"}),
    "dwserve_kernel_launches_per_forward": ("gauge", {"model", "impl", "kind"}),
    "dwserve_kernel_launches_total": ("counter", {"model", "impl", "kind"}),
    "dwserve_inflight_requests": ("gauge", {"model"}),
    "dwserve_generated_tokens_total": ("counter", {"model", "impl"}),
    "dwserve_time_to_first_token_seconds": ("histogram", {"model", "impl"}),
    "dwserve_time_per_output_token_seconds": ("histogram", {"model", "impl"}),
    "dwserve_build_info": ("gauge", None),
}
# Labels the service adds beyond the contract's, each documented in README.md's metrics list.
# route (infer|classify|generate) keeps seconds-long generations out of the one-shot latency SLO.
EXTRA_LABELS = {"dwserve_request_duration_seconds": {"route"}}


@pytest.fixture(scope="module")
def families(app_client):
    """Every contract metric with a series: inferences under two impls, a classification, a
    generation; then the exposition's families by exposed name (counters get their _total back)."""
    from PIL import Image
    import io
    for impl in ("per_group", "auto"):
        assert _infer_json(app_client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl=impl).status_code == 200
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG")
    assert app_client.post("/v1/classify", files={"file": ("x.png", buf.getvalue(), "image/png")}).status_code == 200
    assert app_client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 3}).status_code == 200
    out = {}
    for fam in text_string_to_metric_families(app_client.get("/metrics").text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam
    return out


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in CONTRACT_METRICS])
def test_metric_type_and_exact_labels(families, name):
    kind, labels = CONTRACT_METRICS[name]
    assert name in families, f"{name} not exported (or without a series after every kind of request)"
    fam = families[name]
    assert fam.type == kind
    seen = {frozenset(set(s.labels) - {"le"}) for s in fam.samples}
    if labels is not None:
        assert seen == {frozenset(labels | EXTRA_LABELS.get(name, set()))}, seen


def test_seconds_metrics_are_in_seconds(families):
    """Base units: a fake forward sleeps 10 ms, so its mean compute time is ~0.01 (not 10)."""
    samples = {s.name: s.value for s in families["dwserve_compute_duration_seconds"].samples
               if s.labels.get("model") == "mobilenet_v2"}
    mean = samples["dwserve_compute_duration_seconds_sum"] / samples["dwserve_compute_duration_seconds_count"]
    assert 0.005 < mean < 1.0, mean
    for name in (n for n in CONTRACT_METRICS if n.endswith("_seconds")):
        buckets = [float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")]
        assert min(buckets) <= 0.001, (name, min(buckets))             # sub-millisecond ops resolvable


def test_impl_and_kind_label_values(families):
    impls = {s.labels["impl"] for n, (_, labels) in CONTRACT_METRICS.items() if labels and "impl" in labels
             for s in families[n].samples}
    assert impls and impls <= set(POLICIES), impls
    kinds = {s.labels["kind"] for n in ("dwserve_kernel_launches_per_forward", "dwserve_kernel_launches_total")
             for s in families[n].samples}
    assert kinds and kinds <= {"aten_ops", "cuda_kernels"}, kinds


def test_build_info_is_one_constant_series(families):
    samples = families["dwserve_build_info"].samples
    assert len(samples) == 1 and samples[0].value == 1.0


def test_openapi_json_is_json(app_client):
    assert json.loads(app_client.get("/openapi.json").text)["openapi"].startswith("3.")
