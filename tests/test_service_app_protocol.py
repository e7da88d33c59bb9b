"""The app in-process with fake models (tests/inprocess_app.py): the protocol as a client sees
it. Health and metadata, /openapi.json's references, /infer as JSON (equal to the reference,
the impl echoed) and binary, concurrent requests batched without mixing impls, /v1/classify
and /v1/generate (JSON and SSE), the request-id and depthwise-impl headers. Bad input is
test_service_app_bad_requests.py's, metrics test_service_app_metrics.py's, readiness, auth and
overload test_service_app_ready_auth_overload.py's; the real models run in
tests/test_service_server.py."""
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from service.testing import reference_logits
import inprocess_app
from inprocess_app import LIMITS, _image, _infer_json
from error_bodies import error_message

served = inprocess_app.served   # this module's client: fake models, LIMITS


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
    assert r.status_code == 422 and "Content-Type: application/json" in error_message(r)
    r = client.post("/v1/generate", json={"prompt": 5})
    assert r.status_code == 422 and "Content-Type" not in error_message(r)


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


def test_depthwise_impl_header_on_inference_responses(served):
    client, _ = served
    r = _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl="per_group")
    assert r.headers["x-depthwise-impl"] == "per_group"
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                                  "depthwise_impl": "native"})
    assert r.status_code == 200 and r.headers["x-depthwise-impl"] == "native"
    assert client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 1}).headers["x-depthwise-impl"] == "auto"
    assert "x-depthwise-impl" not in client.get("/v2/health/live").headers
