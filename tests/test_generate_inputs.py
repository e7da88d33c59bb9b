"""/v1/generate and Triton's generate extension: lenient inputs refused with messages that name
the field and what was expected (service/schemas.py), checked on the schemas and through the
app with the fake models."""
import json

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.app import create_app
from service.errors import http_error, validation_message
from service.schemas import GenerateRequest, TritonGenerateRequest
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
from error_bodies import error_message


def _error(schema, raw) -> str:
    with pytest.raises(ValidationError) as info:
        schema.model_validate(json.loads(raw) if isinstance(raw, (bytes, str)) else raw)
    return validation_message(info.value.errors())


@pytest.mark.parametrize("raw, message", [
    pytest.param(b'{"prompt": "hi", "temperature": NaN}', "temperature: Input should be a finite number", id="nan"),
    pytest.param(b'{"prompt": "hi", "temperature": Infinity}', "temperature: Input should be a finite number", id="inf"),
    pytest.param(b'{"prompt": "hi", "temperature": "nan"}', "temperature: Input should be a valid number", id="nan-string"),
    # each value in its own JSON type: no numbers in strings, no 1 / "yes" for true, no 3.0 for an integer
    pytest.param(b'{"prompt": "hi", "max_new_tokens": "3"}', "max_new_tokens: Input should be a valid integer",
                 id="string-max-new-tokens"),
    pytest.param(b'{"prompt": "hi", "max_new_tokens": 3.0}', "max_new_tokens: Input should be a valid integer",
                 id="float-max-new-tokens"),
    pytest.param(b'{"prompt": "hi", "temperature": "0.5"}', "temperature: Input should be a valid number",
                 id="string-temperature"),
    pytest.param(b'{"prompt": "hi", "seed": "7"}', "seed: Input should be a valid integer", id="string-seed"),
    pytest.param(b'{"input_ids": ["104", "105"]}', "input_ids.0: Input should be a valid integer", id="string-token-ids"),
    pytest.param(b'{"prompt": "hi", "stream": "yes"}', "stream: Input should be a valid boolean", id="string-stream"),
    pytest.param(b'{"prompt": "hi", "stream": 1}', "stream: Input should be a valid boolean", id="number-stream"),
    pytest.param(b'{"prompt": "hi", "ignore_eos": "true"}', "ignore_eos: Input should be a valid boolean",
                 id="string-ignore-eos"),
    pytest.param(b'{"prompt": "hi", "skip_special_tokens": "off"}', "skip_special_tokens: Input should be a valid boolean",
                 id="string-skip-special"),
    pytest.param(b'{"prompt": "hi", "logit_bias": {"5": "-100"}}', "logit_bias.5: Input should be a valid number",
                 id="string-logit-bias"),
    pytest.param(b'{"prompt": "hi", "top_p": NaN}', "top_p: Input should be a finite number", id="top-p-nan"),
    pytest.param(b'{"prompt": "hi", "presence_penalty": NaN}', "presence_penalty: Input should be a finite number",
                 id="penalty-nan"),
    pytest.param(b'{"prompt": "hi", "logit_bias": {"5": NaN}}', "logit_bias.5: Input should be a finite number",
                 id="logit-bias-nan"),
    pytest.param(b'{"input_ids": [true]}', "input_ids.0: token ids must be integers, got true", id="bool-token-id"),
    pytest.param(b'{"input_ids": [1, false]}', "input_ids.1: token ids must be integers, got false", id="bool-among-ids"),
    pytest.param(b'{"prompt": "hi", "max_new_tokens": true}', "max_new_tokens: expected a number, got true",
                 id="bool-max-new-tokens"),
    pytest.param(b'{"prompt": "hi", "temperature": true}', "temperature: expected a number, got true", id="bool-temperature"),
    pytest.param(b'{"prompt": "\\ud800x"}', r"prompt: expected valid Unicode text; \ud800 at index 0 is a lone UTF-16 "
                 "surrogate", id="lone-surrogate"),
    pytest.param(b'{"prompt": "ab\\udc00"}', r"\udc00 at index 2 is a lone UTF-16 surrogate", id="lone-low-surrogate"),
    pytest.param(b'{"prompt": "hi", "stop": ["\\ud83d"]}', r"\ud83d at index 0 is a lone UTF-16 surrogate",
                 id="surrogate-in-stop"),
])
def test_generate_request_refuses_with_a_named_field(raw, message):
    error = _error(GenerateRequest, raw)
    assert message in error, error
    assert error.split(":")[0].split(".")[0] in raw.decode()   # names a field of the request


@pytest.mark.parametrize("raw", [
    pytest.param(b'{"prompt": "\\ud83d\\ude00 hi", "temperature": 0.7, "top_p": 0.5, "seed": 3}', id="surrogate-pair"),
    pytest.param(b'{"input_ids": [0, 1, 2], "max_new_tokens": 4, "temperature": 0}', id="token-ids"),
    pytest.param(b'{"prompt": "hi", "logit_bias": {"5": -100}, "stop": ["x", "y"]}', id="bias-and-stops"),
    pytest.param(b'{"prompt": "hi", "temperature": 1, "top_p": 1, "stream": false, "ignore_eos": true}',
                 id="integers-as-numbers")])
def test_valid_generate_requests_still_parse(raw):
    GenerateRequest.model_validate(json.loads(raw))
    GenerateRequest.model_validate_json(raw)


@pytest.mark.parametrize("body, message", [
    pytest.param({"text_input": "hi", "parameters": {"temperature": float("nan")}}, "finite number", id="nan"),
    pytest.param({"text_input": "hi", "max_tokens": True}, "max_tokens: expected a number, got true", id="bool"),
    pytest.param({"text_input": "\ud800"}, "text_input: expected valid Unicode text", id="lone-surrogate")])
def test_triton_generate_request_is_as_strict(body, message):
    assert message in _error(TritonGenerateRequest, body)


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_new_tokens=16, max_sequence_length=64), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as c:
        client_ready(c)
        yield c


@pytest.mark.parametrize("raw, message", [
    pytest.param(b'{"prompt": "hello", "temperature": NaN}', "body.temperature: Input should be a finite number", id="nan"),
    pytest.param(b'{"prompt": "\\ud800x", "max_new_tokens": 2}', r"body.prompt: expected valid Unicode text; \ud800 at "
                 "index 0", id="lone-surrogate"),
    pytest.param(b'{"input_ids": [true]}', "body.input_ids.0: token ids must be integers, got true", id="bool-token-id")])
def test_generate_route_answers_4xx_naming_the_field(client, raw, message):
    r = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and message in error_message(r), r.text
    assert client.post("/v1/generate", json={"prompt": "hi", "max_new_tokens": 2}).status_code == 200


@pytest.mark.parametrize("path", ["/v2/models/lfm2/generate", "/v2/models/lfm2/generate_stream"])
def test_triton_generate_names_a_lone_surrogate_as_v1_generate_does(client, path):
    """pydantic's JSON parser calls the escape invalid JSON ("unexpected end of hex escape"); the
    route names the field and the character instead. Text that is not JSON keeps the parser's word."""
    r = client.post(path, content=b'{"text_input": "ab\\ud800", "max_tokens": 2}')
    assert r.status_code == 400, r.text
    assert r"text_input: expected valid Unicode text; \ud800 at index 2 is a lone UTF-16 surrogate" in error_message(r)
    r = client.post(path, content=b'{"text_input": "ab')
    assert r.status_code == 400 and "not valid JSON (EOF while parsing a string" in error_message(r), r.text
    assert client.post(path, json={"text_input": "hi", "max_tokens": 2}).status_code == 200


def test_http_error_names_the_byte_that_is_not_utf8():
    """FastAPI answers a JSON body that is not UTF-8 with HTTPException(400, "There was an error
    parsing the body") raised from the UnicodeDecodeError; errors.http_error says which byte."""
    app = FastAPI()

    class Body(BaseModel):
        prompt: str

    @app.post("/echo")
    async def echo(body: Body):
        return {"prompt": body.prompt}

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        status, message, headers = http_error(exc)
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    with TestClient(app) as c:
        r = c.post("/echo", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert error_message(r) == ("request body: expected UTF-8 JSON; byte 0xff at offset 12 is not valid UTF-8 "
                                     "(invalid start byte)")
        assert c.get("/nope").json() == {"error": "Not Found"}          # other HTTP errors as they were
        assert c.post("/echo", json={"prompt": "é"}).json() == {"prompt": "é"}


def test_generate_route_names_the_byte_that_is_not_utf8(client):
    r = client.post("/v1/generate", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert error_message(r) == ("request body: expected UTF-8 JSON; byte 0xff at offset 12 is not valid UTF-8 "
                                 "(invalid start byte)")


@pytest.mark.parametrize("route, body", [
    pytest.param("/v1/completions", b'{"prompt": "hi", "temperature": NaN}', id="completions"),
    pytest.param("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}',
                 id="chat"),
])
def test_openai_routes_want_finite_floats(client, route, body):
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and "finite number" in error_message(r), r.text


def test_generation_stops_at_the_models_positions_not_only_the_servers_limit():
    """A checkpoint with fewer positions than --max-sequence-length: /v1/generate refuses what
    would run past them (as /v2 infer does), naming the model's limit; the engine is sized to it."""
    models = fake_models()
    models["lfm2"].lm.config.max_position_embeddings = 24
    app = create_app(Settings(max_new_tokens=64, max_sequence_length=128), models=models, hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as c:
        client_ready(c)
        r = c.post("/v1/generate", json={"input_ids": [5] * 20, "max_new_tokens": 10})
        assert r.status_code == 400 and "exceeds 24 tokens (the model's max_position_embeddings)" in error_message(r), r.text
        ok = c.post("/v1/generate", json={"input_ids": [5] * 20, "max_new_tokens": 4})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4, ok.text
        assert app.state.service.generate.scheduler.max_length == 24
