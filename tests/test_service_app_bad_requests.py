"""The app in-process with fake models (tests/inprocess_app.py) against bad input: every case
of the malformed-request battery (service/bad_requests.py) is a 4xx with an error body, a
chunked body over the limit a 413, a route's unexpected exception one JSON 500 carrying the
request id and logged once, and no JSON document makes the /infer decoder raise anything but
ValueError (hypothesis)."""
import io
import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.bad_requests import malformed_requests
from service.testing import fake_hooks, fake_models
from server_process import client_ready
import inprocess_app
from inprocess_app import LIMITS
from error_bodies import error_message

served = inprocess_app.served   # this module's client: fake models, LIMITS


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
    assert isinstance(error_message(r), str) and error_message(r)
    assert client.get("/v2/health/ready").status_code == 200


def test_streamed_body_over_limit_is_413_without_content_length(served):
    client, _ = served

    def chunks():  # no Content-Length: sent chunked
        for _ in range(8):
            yield b" " * (LIMITS["max_body_bytes"] // 4)

    r = client.post("/v2/models/lfm2/infer", content=chunks())
    assert r.status_code == 413 and "limit" in error_message(r)


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


def test_a_route_whose_model_is_not_served_names_the_route_asked():
    """A server without lfm2 answered /v1/completions and /v1/chat/completions with
    '/v1/generate needs the lfm2 model', a route the client never called."""
    models = fake_models()
    app = create_app(Settings(models=("mobilenet_v2",), **LIMITS), models={"mobilenet_v2": models["mobilenet_v2"]},
                     hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        for path, body in (("/v1/generate", {"prompt": "hi"}),
                           ("/v1/completions", {"model": "lfm2", "prompt": "hi"}),
                           ("/v1/chat/completions", {"model": "lfm2", "messages": [{"role": "user", "content": "hi"}]})):
            r = client.post(path, json=body)
            assert r.status_code == 404, (path, r.text)
            message = error_message(r)
            assert message.startswith(f"{path} needs the lfm2 model"), (path, message)


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/completions", "/v1/chat/completions"])
def test_a_body_that_is_no_json_says_where_and_why(served, path):
    """FastAPI's own words were 'body.15: JSON decode error': neither what is wrong nor what to send."""
    client, _ = served
    r = client.post(path, content=b'{"prompt": "x",', headers={"content-type": "application/json"})
    assert r.status_code == (422 if path == "/v1/generate" else 400)   # the OpenAI routes: OpenAI's 400
    assert "body: not valid JSON at character 15 (Expecting property name enclosed in double quotes); " \
        "expected a JSON object" in error_message(r), r.text
