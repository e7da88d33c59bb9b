"""A prompt longer than the sequence limit: the 400 named neither the field that held it nor
how to raise the limit ("prompt (100 tokens) + max_tokens (1) exceeds 64 tokens", param
max_tokens, for a text_input or chat messages). Each route names its own field, the token
count, the limit and the setting; the status stays 400."""
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from tests.server_process import client_ready

LIMIT = 64
LONG = "x" * 100       # FakeTokenizer: one token per character


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_sequence_length=LIMIT, warmup=False), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield client_ready(c)


@pytest.mark.parametrize("path,body,field", [
    pytest.param("/v1/generate", {"prompt": LONG, "max_new_tokens": 1}, "prompt", id="v1-prompt"),
    pytest.param("/v1/generate", {"input_ids": [40] * 100, "max_new_tokens": 1}, "input_ids", id="v1-ids"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": LONG, "max_tokens": 1}, "text_input", id="triton"),
    pytest.param("/v1/completions", {"model": "lfm2", "prompt": LONG, "max_tokens": 1}, "prompt", id="completions"),
    pytest.param("/v1/chat/completions", {"model": "lfm2", "max_tokens": 1,
                                          "messages": [{"role": "user", "content": LONG}]}, "messages", id="chat"),
])
def test_a_prompt_over_the_limit_names_its_field_count_limit_and_setting(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert message.startswith(field), message
    assert f"tokens) exceeds {LIMIT} tokens" in message and "max_tokens" not in message, message
    assert "--max-sequence-length" in message and "DWSERVE_MAX_SEQUENCE_LENGTH" in message, message
    if isinstance(error, dict):
        assert error["param"] == field, error
