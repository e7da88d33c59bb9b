"""The app in-process with fake models (service.testing): protocol, batching, limits,
metrics and auth, fast. The real models run in tests/test_service_server.py."""
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.bad_requests import malformed_requests
from service.testing import fake_hooks, fake_models, reference_logits
from server_process import client_ready

LIMITS = dict(max_sequence_length=64, max_batch_size=4, max_body_bytes=3 * 2**20, max_new_tokens=16,
              max_queue_delay_ms=20, request_timeout_s=20)


@pytest.fixture(scope="module")
def served():
    models = fake_models(delay_s=0.01)
    app = create_app(Settings(**LIMITS), models=models, hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        yield client, models


def _image(rng, rows=1):
    return rng.standard_normal((rows, 3, 224, 224)).astype(np.float32)


def _infer_json(client, model, name, arr, datatype, **params):
    body = {"inputs": [{"name": name, "shape": list(arr.shape), "datatype": datatype, "data": arr.reshape(-1).tolist()}]}
    if params:
        body["parameters"] = params
    return client.post(f"/v2/models/{model}/infer", json=body)


def test_health_metadata_and_unknown_model(served):
    client, _ = served
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/mobilenet_v2").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert client.get("/v2/models/lfm2/ready").status_code == 200
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/lfm2/versions/9"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json()


def test_openapi_references_resolve_and_name_what_is_accepted(served):
    """Clients and fuzzers generate requests from /openapi.json: every $ref must resolve (the
    hand-added bodies of /infer, the repository and the generate routes included), the model
    path parameter lists the served models and an input's datatype the codec's."""
    from service.codec import DTYPES

    client, models = served
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            yield from ([node["$ref"]] if "$ref" in node else [])
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = set(refs(schema))
    assert {"#/components/schemas/InferRequest", "#/components/schemas/RepositoryIndexRequest",
            "#/components/schemas/TritonGenerateRequest"} <= found
    assert not {r for r in found if r.removeprefix("#/components/schemas/") not in components}
    assert components["RequestInput"]["properties"]["datatype"]["enum"] == sorted(DTYPES)
    (param,) = schema["paths"]["/v2/repository/models/{model}/load"]["post"]["parameters"]
    assert param["schema"]["enum"] == list(models)


def test_a_json_body_sent_unlabelled_gets_told_to_say_json(served):
    """`curl -d` without -H labels the body form-encoded: the 422 says what to send instead."""
    client, _ = served
    r = client.post("/v1/generate", content=b'{"prompt": "hi"}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["error"]
    r = client.post("/v1/generate", json={"prompt": 5})
    assert r.status_code == 422 and "Content-Type" not in r.json()["error"]


def test_infer_json_matches_reference_and_echoes_impl(served):
    client, models = served
    x = _image(np.random.default_rng())
    r = _infer_json(client, "mobilenet_v2", "input", x, "FP32", depthwise_impl="slice_sum")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["parameters"]["depthwise_impl"] == "slice_sum"
    got = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(out["outputs"][0]["shape"])
    want = reference_logits(torch.from_numpy(x), models["mobilenet_v2"].weight).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert models["mobilenet_v2"].calls[-1][1] == "slice_sum"  # the forward ran under use_impl


def test_infer_binary_round_trip(served):
    client, _ = served
    ids = np.random.default_rng().integers(0, 90, size=(2, 5)).astype(np.int64)
    head = json.dumps({"inputs": [{"name": "input_ids", "shape": [2, 5], "datatype": "INT64",
                                   "parameters": {"binary_data_size": ids.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    r = client.post("/v2/models/lfm2/infer", content=head + ids.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert "compute;dur=" in r.headers["server-timing"] and "queue;dur=" in r.headers["server-timing"]
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    logits = np.frombuffer(r.content[n:], dtype=np.float32).reshape(meta["outputs"][0]["shape"])
    np.testing.assert_array_equal(logits.argmax(-1), (ids[:, -1] + 1) % 95)


def test_concurrent_requests_are_batched_and_impls_never_mix(served):
    client, models = served
    model = models["lfm2"]
    model.calls.clear()
    ids = [1, 2, 3]

    def one(i):
        return _infer_json(client, "lfm2", "input_ids", np.array([ids]), "INT64",
                           depthwise_impl="native" if i % 2 else "slice_sum")

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(16)))
    assert all(r.status_code == 200 for r in responses)
    for i, r in enumerate(responses):
        assert r.json()["parameters"]["depthwise_impl"] == ("native" if i % 2 else "slice_sum")
    rows = [n for n, _ in model.calls]
    assert sum(rows) == 16 and max(rows) > 1 and max(rows) <= LIMITS["max_batch_size"]


def test_classify_png_and_generate(served):
    client, _ = served
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    r = client.post("/v1/classify?top_k=3", files={"file": ("x.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    labels = r.json()["labels"]
    assert len(labels) == 3 and labels[0]["score"] >= labels[1]["score"] >= labels[2]["score"]
    r = client.post("/v1/generate", json={"prompt": "abc", "max_new_tokens": 4})
    assert r.status_code == 200 and r.json()["text"] == "defg" and r.json()["finish_reason"] == "length"
    r = client.post("/v1/generate", json={"prompt": "abc", "max_new_tokens": 8, "stop": "fg"})
    assert r.json()["text"] == "de" and r.json()["finish_reason"] == "stop"


def test_generate_stream_is_token_by_token_sse(served):
    client, _ = served
    with client.stream("POST", "/v1/generate", json={"prompt": "a", "max_new_tokens": 5, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    tokens = [json.loads(e) for e in events[:-2]]
    assert "".join(t["text"] for t in tokens) == "bcdef" and len(tokens) == 5
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in malformed_requests(
    vocab=96, max_sequence_length=LIMITS["max_sequence_length"], max_batch_size=LIMITS["max_batch_size"],
    max_body_bytes=LIMITS["max_body_bytes"])])
def test_malformed_request_is_a_4xx_with_error_body(served, case):
    client, _ = served
    _, method, path, kwargs, status = case
    r = client.request(method, path, **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code == status, r.text[:300]
    assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


def test_streamed_body_over_limit_is_413_without_content_length(served):
    client, _ = served

    def chunks():  # no Content-Length: sent chunked
        for _ in range(8):
            yield b" " * (LIMITS["max_body_bytes"] // 4)

    r = client.post("/v2/models/lfm2/infer", content=chunks())
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_cuda_kernel_counts_reach_the_launch_metric():
    """Where count_launches sees CUDA kernels (a CUDA device), the launch gauge and counter
    carry them as kind="cuda_kernels" beside the aten ops (the profiler side of this is
    tests/test_profiling.py's CUDA test)."""
    from types import SimpleNamespace
    from service.testing import _Count
    hooks = fake_hooks()

    def count_launches(fn, *args, **kwargs):
        counted = hooks.count_launches(fn, *args, **kwargs)
        return _Count(aten_ops=counted.aten_ops, cuda_kernels=3 * counted.aten_ops)

    app = create_app(Settings(**LIMITS), models=fake_models(), hooks=SimpleNamespace(**{**vars(hooks), "count_launches": count_launches}))
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        for impl in ("per_group", "auto"):
            assert _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl=impl).status_code == 200
        text = client.get("/metrics").text
    for needle in ['dwserve_kernel_launches_per_forward{impl="per_group",kind="cuda_kernels",model="lfm2"} 300.0',
                   'dwserve_kernel_launches_per_forward{impl="auto",kind="cuda_kernels",model="lfm2"} 30.0',
                   'dwserve_kernel_launches_total{impl="per_group",kind="cuda_kernels",model="lfm2"} 300.0',
                   'dwserve_kernel_launches_per_forward{impl="auto",kind="aten_ops",model="lfm2"} 10.0']:
        assert needle in text, needle


def test_request_id_on_every_response(served):
    client, _ = served
    ok = _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64")
    assert len(ok.headers["x-request-id"]) == 32 and int(ok.headers["x-request-id"], 16) >= 0   # a fresh one
    given = client.post("/v2/models/lfm2/infer", content=b"{bad", headers={"X-Request-ID": "trace-42"})
    assert given.status_code == 400 and given.headers["x-request-id"] == "trace-42"
    r = client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 2}, headers={"X-Request-ID": "a b"})
    assert r.status_code == 200 and r.headers["x-request-id"] != "a b"       # not a token: replaced
    assert client.get("/v2/health/live", headers={"X-Request-ID": "x" * 129}).headers["x-request-id"] != "x" * 129
    assert ok.headers["x-request-id"] != r.headers["x-request-id"]



def test_internal_error_answers_with_the_request_id_and_logs_it_once(caplog):
    """A route's unexpected exception (a /v1/classify forward raising RuntimeError) is a JSON
    500 carrying the client's X-Request-ID, logged once, naming that id: Starlette's own 500
    went out without the header and the exception was re-raised to be logged again, no id."""
    from PIL import Image

    models = fake_models()

    def broken(inputs):
        raise RuntimeError("kaboom")

    models["mobilenet_v2"].forward = broken
    app = create_app(Settings(warmup=False), models=models, hooks=fake_hooks())
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    with TestClient(app, raise_server_exceptions=True) as client:   # a re-raise would fail here
        client_ready(client)
        caplog.clear()
        r = client.post("/v1/classify", files={"file": ("x.png", buf.getvalue(), "image/png")},
                        headers={"X-Request-ID": "trace-500"})
    assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError"}
    assert r.headers["x-request-id"] == "trace-500" and r.headers["x-depthwise-impl"] == "auto"
    errors = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert len(errors) == 1 and "trace-500" in errors[0].getMessage(), [e.getMessage() for e in errors]


def test_depthwise_impl_header_on_inference_responses(served):
    client, _ = served
    r = _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl="per_group")
    assert r.headers["x-depthwise-impl"] == "per_group"
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                                  "depthwise_impl": "native"})
    assert r.status_code == 200 and r.headers["x-depthwise-impl"] == "native"
    assert client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 1}).headers["x-depthwise-impl"] == "auto"
    assert "x-depthwise-impl" not in client.get("/v2/health/live").headers


def test_metrics_names_labels_and_impl_override(served):
    client, _ = served
    _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl="per_group")
    client.post("/v2/models/lfm2/infer", content=b"{bad")
    client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 3})
    text = client.get("/metrics").text
    for needle in ['dwserve_requests_total{impl="per_group",model="lfm2",status="200"}',
                   'dwserve_requests_total{impl="auto",model="lfm2",status="400"}',
                   'dwserve_request_duration_seconds_bucket{impl="per_group",le="0.0001",model="lfm2",route="infer"}',
                   'dwserve_request_duration_seconds_count{impl="auto",model="lfm2",route="generate"}',
                   'dwserve_queue_duration_seconds_count{model="lfm2"}',
                   'dwserve_compute_duration_seconds_count{impl="per_group",model="lfm2"}',
                   'dwserve_batch_size_bucket{le="1.0",model="lfm2"}',
                   'dwserve_kernel_launches_per_forward{impl="per_group",kind="aten_ops",model="lfm2"} 100.0',
                   'dwserve_kernel_launches_per_forward{impl="auto",kind="aten_ops",model="lfm2"} 10.0',
                   'dwserve_kernel_launches_total{impl="per_group",kind="aten_ops",model="lfm2"}',
                   'dwserve_inflight_requests{model="lfm2"} 0.0',
                   'dwserve_generated_tokens_total{impl="auto",model="lfm2"}',
                   'dwserve_time_to_first_token_seconds_count{impl="auto",model="lfm2"}',
                   'dwserve_time_per_output_token_seconds_count{impl="auto",model="lfm2"}',
                   'dwserve_build_info{device="cpu"',
                   'dwserve_model_info{architecture="unknown",conv_kernel_size="",dtype="unknown",model="lfm2"} 1.0']:
        assert needle in text, needle


def test_depthwise_duration_sampled_every_n_forwards():
    models = fake_models()
    app = create_app(Settings(depthwise_sample_every=3, max_queue_delay_ms=0), models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        for _ in range(9):
            _infer_json(client, "lfm2", "input_ids", np.array([[1]]), "INT64", depthwise_impl="native")
        text = client.get("/metrics").text
    line = next(l for l in text.splitlines()
                if l.startswith('dwserve_depthwise_duration_seconds_count{impl="native",model="lfm2"}'))
    # 5 warm-up (batch 1, 4, 7, 8, 1) + 9 forwards: 9 and 12 sampled; 6 is the first of its
    # shape class under native, so it is counted (launches) and neither timed nor sampled.
    assert float(line.split()[-1]) == 2.0


def test_not_ready_until_warmed_up_and_live_from_start():
    gate = threading.Event()
    models = fake_models()
    original = models["lfm2"].warmup_inputs
    models["lfm2"].warmup_inputs = lambda batch_size=1: (gate.wait(10), original(batch_size))[1]
    app = create_app(Settings(), models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        r = _infer_json(client, "lfm2", "input_ids", np.array([[1]]), "INT64")
        assert r.status_code == 503 and "Retry-After" in r.headers
        gate.set()
        client_ready(client)


def test_bearer_token_guards_inference_routes_only():
    app = create_app(Settings(api_key="s3cret"), models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        body = {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}
        r = client.post("/v2/models/lfm2/infer", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.post("/v2/models/lfm2/infer", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/v2/models/lfm2/infer", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200 and client.get("/metrics").status_code == 200
        assert 'status="401"' in client.get("/metrics").text


def test_overload_gives_503_and_every_request_an_answer():
    models = fake_models(delay_s=0.05)
    app = create_app(Settings(max_queue_size=2, max_batch_size=1, max_queue_delay_ms=0),
                     models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)

        def one(_):
            return _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64")

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(one, range(24), timeout=60))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 2
        assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
        assert client.get("/v2/health/ready").status_code == 200


def test_decode_of_arbitrary_json_raises_only_value_error(served):
    """Hypothesis: any JSON document (and any binary header) is either a valid request or a
    ValueError (-> 400) from the /infer decoder, never another exception (-> 500)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, _ = served
    handler = client.app.state.service.tensor["lfm2"]
    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
    json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                               | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
    tensor = st.fixed_dictionaries({"name": st.sampled_from(["input_ids", "x", 3]),
                                    "shape": st.lists(st.integers(-2, 5), max_size=3) | json_values,
                                    "datatype": st.sampled_from(["INT64", "FP32", "BOOL", "BYTES", 1])},
                                   optional={"data": json_values, "parameters": json_values})
    documents = json_values | st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2)},
                                                    optional={"parameters": json_values, "outputs": json_values})

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(documents, st.binary(max_size=32), st.none() | st.integers(-5, 400).map(str))
    def check(doc, tail, header):
        body = json.dumps(doc).encode() + tail
        try:
            handler.decode(body, header)
        except ValueError:
            pass

    check()
