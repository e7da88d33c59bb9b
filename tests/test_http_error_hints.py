"""Mistakes a curl user makes at the HTTP level are answered saying what was expected: a
method a route does not take (405 naming the methods it does), `-F file=image.jpg` without
the `@` (a text field, not a file), a hand-set multipart Content-Type without its boundary,
and /v1/classify's top_k given twice in the query (a 400, as twice in the form already was;
the last one was used without a word)."""
import io

import pytest
from PIL import Image

import inprocess_app
from error_bodies import error_message

served = inprocess_app.served


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("method, path, allowed", [
    pytest.param("GET", "/v2/models/lfm2/infer", "POST", id="infer"),
    pytest.param("GET", "/v1/classify", "POST", id="classify"),
    pytest.param("POST", "/metrics", "GET", id="metrics"),
    pytest.param("DELETE", "/v1/completions", "POST", id="openai"),
])
def test_405_names_the_methods_the_route_takes(served, method, path, allowed):
    client, _ = served
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allowed
    message = error_message(r)
    assert message.startswith("Method Not Allowed") and method in message and allowed in message, message


def test_file_sent_as_text_field_says_to_send_a_file(served):
    """curl -F file=cat.jpg (no @) sends the text 'cat.jpg'; the 422 said
    "Value error, Expected UploadFile, received: <class 'str'>"."""
    client, _ = served
    r = client.post("/v1/classify", data={"file": "cat.jpg"}, files={"other": ("x", b"")})
    assert r.status_code in (400, 422), r.text
    message = error_message(r)
    assert "UploadFile" not in message and "<class" not in message, message
    assert "file=@" in message, message


@pytest.mark.parametrize("content_type", [
    pytest.param("multipart/form-data", id="no-boundary"),
    pytest.param("multipart/form-data; boundary=zz", id="wrong-boundary"),
])
def test_broken_multipart_says_how_to_send_it(served, content_type):
    client, _ = served
    r = client.post("/v1/classify", content=b"x", headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    assert "file=@" in error_message(r), error_message(r)


def test_top_k_twice_in_the_query_is_a_400(served):
    client, _ = served
    files = {"file": ("x.png", _png(), "image/png")}
    r = client.post("/v1/classify?top_k=1&top_k=2", files=files)
    assert r.status_code == 400 and "top_k" in error_message(r) and "once" in error_message(r), r.text
    r = client.post("/v1/classify?top_k=2", files=files)
    assert r.status_code == 200 and len(r.json()["labels"]) == 2, r.text
