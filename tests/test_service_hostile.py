"""The app in-process (fake models) against a hostile client: what an attacker controls must
not grow the metrics, slip past the bearer token, or reach headers and logs verbatim.
(Bodies: tests/test_request_bodies.py; images: tests/test_classify_images.py; the rest of the
malformed-request battery: service/bad_requests.py, run by tests/test_service_app_bad_requests.py.)"""
import io
import logging
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.metrics import ROUTES
from service.settings import IMPL_CHOICES, Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
from error_bodies import error_message

IDS = {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
KEY = "s3cret-token"


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_queue_delay_ms=0), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client_ready(client)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _labels(text: str) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("dwserve_") and "{" in line:
            for key, value in re.findall(r'(\w+)="([^"]*)"', line):
                values.setdefault(key, set()).add(value)
    return values


def test_made_up_names_add_no_label_values(client):
    """50 distinct bogus model names, versions and depthwise_impls on every inference route:
    each label keeps to its fixed set (served models + "unknown", IMPL_CHOICES, ROUTES), so
    no client can grow the series Prometheus stores."""
    png = _png()
    for i in range(50):
        bogus = f"bogus-{i}"
        client.post(f"/v2/models/{bogus}/infer", json=IDS)
        client.post(f"/v2/models/{bogus}/versions/{i}/infer", json=IDS)
        client.post(f"/v2/models/lfm2/versions/{i + 2}/infer", json=IDS)
        client.post(f"/v2/models/{bogus}/generate", json={"text_input": "a"})
        client.post(f"/v2/models/{bogus}/generate_stream", json={"text_input": "a"})
        client.post("/v2/models/lfm2/infer", json={**IDS, "parameters": {"depthwise_impl": bogus}})
        client.post("/v2/models/lfm2/generate", json={"text_input": "a", "parameters": {"depthwise_impl": bogus}})
        client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 1, "depthwise_impl": bogus})
        client.post("/v1/completions", json={"model": bogus, "prompt": "a", "max_tokens": 1})
        client.post("/v1/chat/completions", json={"model": bogus, "messages": [{"role": "user", "content": "a"}]})
        client.post(f"/v1/classify?depthwise_impl={bogus}", files={"file": ("x.png", png, "image/png")})
        client.get(f"/v2/models/{bogus}/stats")
    labels = _labels(client.get("/metrics").text)
    assert labels["model"] <= {"lfm2", "mobilenet_v2", "unknown"}, labels["model"]
    assert labels["impl"] <= set(IMPL_CHOICES), labels["impl"]
    assert labels.get("route", set()) <= set(ROUTES), labels.get("route")
    assert all(re.fullmatch(r"[1-5][0-9][0-9]", s) for s in labels["status"]), labels["status"]
    assert "unknown" in labels["model"]   # the bogus names were counted, under one value


INFERENCE = [("/v2/models/lfm2/infer", {"json": IDS}),
             ("/v2/models/lfm2/versions/1/infer", {"json": IDS}),
             ("/v2/models/lfm2/generate", {"json": {"text_input": "a", "parameters": {"max_tokens": 1}}}),
             ("/v2/models/lfm2/generate_stream", {"json": {"text_input": "a", "parameters": {"max_tokens": 1}}}),
             ("/v1/generate", {"json": {"prompt": "a", "max_new_tokens": 1}}),
             ("/v1/completions", {"json": {"prompt": "a", "max_tokens": 1}}),
             ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "a"}], "max_tokens": 1}}),
             ("/v1/classify", {"files": {"file": ("x.png", _png(), "image/png")}})]
# Open with a key set: probes and scrapers carry no token (deploy/prometheus and k8s send none),
# and the rest is read-only description of a repository fixed at start (load is a no-op once
# ready, unload a 400: triton_ext.py), as Triton leaves them open unless restricted.
OPEN = [("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("HEAD", "/v2/health/live"),
        ("HEAD", "/v2/health/ready"), ("GET", "/metrics"), ("GET", "/v2"), ("GET", "/v2/models/lfm2"),
        ("GET", "/v2/models/lfm2/ready"), ("GET", "/v1/models")]


def test_the_bearer_token_guards_every_inference_route_and_leaves_probes_open(monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    app = create_app(Settings(api_key=KEY, max_queue_delay_ms=0), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        for path, kwargs in INFERENCE:
            for auth in (None, "Bearer wrong", f"Bearer {KEY}x", f"Basic {KEY}", KEY, "Bearer "):
                headers = {"Authorization": auth} if auth else {}
                r = client.post(path, headers=headers, **kwargs)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, auth, r.text)
            r = client.post(path, headers={"Authorization": f"bearer {KEY}"}, **kwargs)   # the scheme is case-insensitive
            assert r.status_code == 200, (path, r.text)
        for method, path in OPEN:
            assert client.request(method, path).status_code == 200, (method, path)
    assert compared, "the token was not compared with hmac.compare_digest (constant time)"


@pytest.mark.parametrize("given", [
    pytest.param("abc\x1b[31mred", id="escape-sequence"), pytest.param("a\x7fb", id="DEL"),
    pytest.param("a\tb", id="tab"), pytest.param("a b", id="space"), pytest.param("caf\xe9", id="latin-1"),
    pytest.param("x" * 129, id="129-chars"), pytest.param("", id="empty")])
def test_an_unfit_request_id_is_replaced_in_the_reply_and_the_log(given, caplog):
    """X-Request-ID is echoed and logged with every error; one that is not a printable ASCII
    token of at most 128 characters is replaced by a fresh one, so no client writes control
    characters (terminal escapes, log-line forgery) or an unbounded string into either."""
    models = fake_models()
    models["mobilenet_v2"].forward = lambda inputs: 1 / 0   # an internal error, which is logged
    app = create_app(Settings(warmup=False), models=models, hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            r = client.post("/v1/classify", files={"file": ("x.png", _png(), "image/png")},
                            headers={"X-Request-ID": given.encode("latin-1")})
        kept = client.get("/v2/health/live", headers={"X-Request-ID": "x" * 128})
    assert r.status_code == 500
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers["x-request-id"]
    logged = " ".join(rec.getMessage() for rec in caplog.records)
    assert r.headers["x-request-id"] in logged and (not given or given not in logged), logged
    assert kept.headers["x-request-id"] == "x" * 128


def test_two_file_parts_are_refused_not_one_dropped(client):
    """/v1/classify answers for one image; given two `file` parts FastAPI bound the last and
    the first was dropped without a word, so a client batching images got one answer for two."""
    png = _png()
    r = client.post("/v1/classify", files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))])
    assert r.status_code == 400 and "one 'file' part" in error_message(r), r.text
    assert client.post("/v1/classify", files={"file": ("a.png", png, "image/png")}).status_code == 200


def test_classify_options_sent_as_form_fields_are_honoured_or_refused(client):
    """top_k and depthwise_impl are query parameters; sent as form fields beside the image
    (`curl -F file=@x.jpg -F top_k=2`, the natural form for a multipart request) they were
    dropped without a word: five labels under the server's default impl, and a bogus impl got a
    200. Now a form field is read as its query parameter, and a field the route does not take is a 400."""
    png = ("x.png", _png(), "image/png")
    r = client.post("/v1/classify", files={"file": png}, data={"top_k": "2", "depthwise_impl": "per_group"})
    assert r.status_code == 200, r.text
    assert len(r.json()["labels"]) == 2 and r.json()["parameters"]["depthwise_impl"] == "per_group", r.json()
    assert r.headers["x-depthwise-impl"] == "per_group"
    for form, said in (({"depthwise_impl": "bogus"}, "depthwise_impl"), ({"top_k": "abc"}, "top_k"),
                       ({"top_k": "0"}, "top_k"), ({"topk": "2"}, "'topk'")):
        r = client.post("/v1/classify", files={"file": png}, data=form)
        assert 400 <= r.status_code < 500 and said in error_message(r), (form, r.text)
    r = client.post("/v1/classify?top_k=3", files={"file": png}, data={"top_k": "2"})
    assert r.status_code == 400 and "top_k" in error_message(r), r.text
    r = client.post("/v1/classify?top_k=3&depthwise_impl=slice_sum", files={"file": png})   # the query form, as before
    assert r.status_code == 200 and len(r.json()["labels"]) == 3 and r.json()["parameters"]["depthwise_impl"] == "slice_sum"


@pytest.mark.parametrize("key", [pytest.param("s3cret\n", id="trailing-newline"), pytest.param(" s3cret", id="leading-space"),
                                 pytest.param("s3\tcret", id="tab"), pytest.param("s\u00e9cret", id="non-ascii"),
                                 pytest.param("", id="empty")])
def test_an_api_key_clients_cannot_send_is_refused_at_start(key):
    """A key read from a secret file often ends in a newline, which no client can send (HTTP
    servers refuse it in a header and strip a value's surrounding whitespace; gRPC metadata is
    visible ASCII), so every request was a 401, the service shut with nothing said. A non-ASCII
    key matched only a client writing the header in Latin-1, and never over gRPC. An empty one
    (`--api-key "$KEY"` with KEY unset) turned auth off: now it is refused too, failing closed.
    (DWSERVE_API_KEY= stays as if unset: the settings' env_ignore_empty.)"""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="visible ASCII"):
        Settings(api_key=key)
    for fine in ("Ab0-._~+/=!#$%&*", "two words"):
        assert Settings(api_key=fine).api_key == fine


@pytest.mark.parametrize("content, where", [
    pytest.param("hi \ud800", "messages[0].content", id="text"),
    pytest.param([{"type": "text", "text": "ok"}, {"type": "text", "text": "\udfff"}], "messages[0].content[1].text",
                 id="text-part"),
])
def test_chat_text_that_is_no_unicode_is_a_400_saying_where(client, content, where):
    """A lone surrogate (JSON's "\\ud800") in a chat message: /v1/generate's prompt said why,
    chat passed it to the tokenizer, whose UTF-8 encode failed with Python's codec message."""
    body = '{"messages": [{"role": "user", "content": %s}], "max_tokens": 1}' % (
        '"hi \\ud800"' if isinstance(content, str) else
        '[{"type": "text", "text": "ok"}, {"type": "text", "text": "\\udfff"}]')
    r = client.post("/v1/chat/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert error_message(r).startswith(f"{where}: expected valid Unicode text;") and "lone UTF-16 surrogate" in r.text


def test_an_image_posted_raw_to_classify_is_told_to_send_multipart(client):
    r = client.post("/v1/classify", content=_png(), headers={"content-type": "image/png"})
    assert r.status_code == 422
    assert "sent as 'image/png'; send the image as the multipart/form-data field 'file'" in error_message(r)
