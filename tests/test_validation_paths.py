"""A field that takes one of several types (a union: `stop` a string or a list of them, a
completion `prompt` text or token ids, chat `content` text or parts, /tokenize's two forms) is
named in a 4xx as the client wrote it: `stop`, not pydantic's branch labels
(`stop.function-after[_unicode_text(), str]`), and on the OpenAI routes `param` is the field
(`prompt`, `messages[0].role`), as README promises, not `prompt.str` or `chat.messages[0].role`."""
import pytest

import inprocess_app
from error_bodies import error_message

served = inprocess_app.served


def _openai_error(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    return error_message(r), r.json()["error"]["param"]


@pytest.mark.parametrize("path, body, param", [
    pytest.param("/v1/completions", {"prompt": 5}, "prompt", id="completion-prompt-number"),
    pytest.param("/v1/completions", {"prompt": "a", "stop": 5}, "stop", id="completion-stop-number"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content",
                 id="chat-content-number"),
    pytest.param("/tokenize", {"messages": [{"role": "x", "content": "y"}]}, "messages[0].role",
                 id="tokenize-chat-role"),
    pytest.param("/tokenize", {"prompt": 5}, "prompt", id="tokenize-prompt-number"),
])
def test_openai_param_is_the_field_as_sent(served, path, body, param):
    client, _ = served
    message, got = _openai_error(client, path, body)
    assert got == param, (got, message)
    assert "[" not in message.split(":")[0] and ".str" not in message, message


@pytest.mark.parametrize("body, field", [
    pytest.param({"prompt": "a", "stop": 5}, "stop", id="stop-number"),
    pytest.param({"prompt": "a", "stop": [5]}, "stop.0", id="stop-list-of-number"),
])
def test_generate_names_the_field_without_branch_labels(served, body, field):
    client, _ = served
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 422, r.text
    message = error_message(r)
    assert "function-after" not in message and "list[" not in message, message
    assert f"body.{field}: " in message, message


def test_one_reason_is_said_once(served):
    """Each branch that failed says its reason; the same reason at the same field once."""
    client, _ = served
    message, _ = _openai_error(client, "/v1/completions", {"prompt": {"a": 1}})
    parts = message.removeprefix("invalid request: ").split("; ")
    assert len(parts) == len(set(parts)), message
