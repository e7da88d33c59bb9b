"""Errors on the OpenAI-compatible routes in OpenAI's shape (service/errors.error_body), as the
official client reads them: its exception's message is the reason and its `type` and `code`
are set, whether the app, the middleware (auth, body limits) or a stream answered. The other
routes keep DESIGN.md's {"error": "..."}."""
import gzip

import httpx
import pytest

openai = pytest.importorskip("openai")

from openai_fake_server import live_server  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with live_server(api_key="s3cret", max_body_bytes=4096, max_new_tokens=16) as url:
        yield url


def _client(url, key="s3cret"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_the_client_shows_the_reason_of_a_400(server):
    """With {"error": "..."} the client's message was 'Error code: 400' and nothing else."""
    with pytest.raises(openai.BadRequestError) as exc:
        _client(server).completions.create(model="lfm2", prompt="ab", max_tokens=1000)
    assert "max_tokens" in exc.value.message and "at most 16" in exc.value.message, exc.value.message
    assert exc.value.type == "invalid_request_error"


def test_the_middlewares_refusals_have_the_shape_too(server):
    with pytest.raises(openai.AuthenticationError) as exc:
        _client(server, key="wrong").chat.completions.create(model="lfm2", messages=[{"role": "user", "content": "a"}])
    assert "Bearer" in exc.value.message and exc.value.type == "authentication_error"
    headers = {"Authorization": "Bearer s3cret", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = httpx.post(f"{server}/v1/completions", content=gzip.compress(b" " * 10_000), headers=headers)
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "DWSERVE_MAX_BODY_BYTES" in error["message"], r.text


def test_other_routes_keep_the_plain_error_string(server):
    r = httpx.post(f"{server}/v1/generate", json={"prompt": "ab", "max_new_tokens": 1000},
                   headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str) and "at most 16" in r.json()["error"], r.text
    r = httpx.post(f"{server}/v1/generate", json={"prompt": "ab"})
    assert r.status_code == 401 and isinstance(r.json()["error"], str), r.text


@pytest.mark.parametrize("call", [
    pytest.param(lambda c: c.completions.create(model="gpt-4o", prompt="ab", max_tokens=1), id="completions"),
    pytest.param(lambda c: c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a"}]),
                 id="chat"),
    pytest.param(lambda c: c.models.retrieve("gpt-4o"), id="models-retrieve"),
])
def test_an_unknown_model_is_openais_model_not_found(server, call):
    """OpenAI answers a model it does not serve with a 404 whose code is `model_not_found`
    (clients and routers branch on it to fall back to another model); the code was null."""
    with pytest.raises(openai.NotFoundError) as exc:
        call(_client(server))
    assert exc.value.code == "model_not_found" and "'gpt-4o'" in exc.value.message, exc.value.body
    r = httpx.post(f"{server}/tokenize", json={"model": "gpt-4o", "prompt": "a"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text


def test_a_wrong_key_is_openais_invalid_api_key(server):
    """OpenAI answers a missing or wrong key with a 401 whose code is `invalid_api_key`; it was null."""
    with pytest.raises(openai.AuthenticationError) as exc:
        _client(server, key="wrong").completions.create(model="lfm2", prompt="ab", max_tokens=1)
    assert exc.value.code == "invalid_api_key", exc.value.body
    r = httpx.post(f"{server}/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text   # no key at all
    r = httpx.post(f"{server}/v1/generate", json={"prompt": "ab"})
    assert r.status_code == 401 and isinstance(r.json()["error"], str), r.text      # other routes: the plain string


@pytest.mark.parametrize("call, param", [
    pytest.param(lambda c: c.completions.create(model="lfm2", prompt="a", temperature=5), "temperature", id="range"),
    pytest.param(lambda c: c.chat.completions.create(model="lfm2", messages=[{"role": "robot", "content": "a"}]),
                 "messages[0]", id="nested"),
    pytest.param(lambda c: c.completions.create(model="lfm2", prompt="a", extra_body={"max_token": 2}), "max_token",
                 id="unknown-field"),
])
def test_a_field_out_of_schema_is_openais_400_naming_it(server, call, param):
    """OpenAI and vLLM answer a field out of their schema with a 400, which the client raises as
    BadRequestError, and name it in `param`; it was a 422 (the client's UnprocessableEntityError,
    which callers catching BadRequestError missed) with `param` null."""
    with pytest.raises(openai.BadRequestError) as exc:
        call(_client(server))
    assert exc.value.status_code == 400 and exc.value.param is not None and exc.value.param.startswith(param), \
        (exc.value.param, exc.value.message)
    assert param.split("[")[0] in exc.value.message
