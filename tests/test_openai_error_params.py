"""OpenAI's `param` of the 400s a request's values get past its schema (fake models, in-process):
the field the client sent, and the message names it as the client called it. Each case here
answered `param: null` (or the wrong field) before: the code that raised named the field
/v1/generate calls it (`input_ids`), or none."""
import json

import pytest

import inprocess_app
from error_bodies import error_message

served = inprocess_app.served   # the module's client of the fake models (vocab_size 96)


def _openai_400(client, path, body):
    # json.dumps escapes a lone surrogate ("\\ud800"), which httpx's json= cannot encode
    r = client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    return error_message(r), r.json()["error"]["param"]


@pytest.mark.parametrize("body, param, starts", [
    pytest.param({"prompt": [1, 999]}, "prompt", "prompt: token ids must be in [0, 96)", id="ids-out-of-vocab"),
    pytest.param({"prompt": [[1, 2], [1, 999]]}, "prompt", "prompt[1]: token ids must be in [0, 96)",
                 id="batched-ids-out-of-vocab"),
])
def test_completion_prompt_errors_name_the_prompt(served, body, param, starts):
    client, _ = served
    message, got = _openai_400(client, "/v1/completions", {**body, "max_tokens": 2})
    assert got == param and message.startswith(starts), (got, message)


@pytest.mark.parametrize("path, body", [
    pytest.param("/v1/completions", {"prompt": "AB", "max_tokens": 2}, id="completions"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "AB"}], "max_tokens": 2},
                 id="chat"),
])
def test_fused_on_a_cpu_server_names_depthwise_impl(served, monkeypatch, path, body):
    """Without a GPU (and outside the tests' Triton interpreter) 'fused' cannot run: a 400 whose
    param is the field that asked for it."""
    client, _ = served
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)   # a CPU server as deployed
    message, got = _openai_400(client, path, {**body, "depthwise_impl": "fused"})
    assert got == "depthwise_impl" and message.startswith("depthwise_impl 'fused' needs a CUDA device"), (got, message)


# A message is named by the path to its field, in the message and in `param`, as a validation
# error of one names it ("messages[0].role" for {"role": "robot"}: test_validation_paths.py).
@pytest.mark.parametrize("message, param", [
    pytest.param({"role": "user"}, "messages[0].content", id="no-content"),
    pytest.param({"role": "user", "content": None}, "messages[0].content", id="null-content"),
    pytest.param({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                 "messages[0].content[0]", id="image-part"),
    pytest.param({"role": "user", "content": [{"type": "text", "text": None}]}, "messages[0].content[0].text",
                 id="text-part-without-text"),
    pytest.param({"role": "user", "content": "a\ud800"}, "messages[0].content", id="lone-surrogate"),
    pytest.param({"role": "tool", "content": "x", "tool_call_id": "1"}, "messages[0].role", id="tool-role"),
    pytest.param({"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}, "messages[0].tool_calls",
                 id="tool-calls"),
])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/tokenize"])
def test_a_bad_message_is_named_by_its_path(served, path, message, param):
    client, _ = served
    body = {"messages": [message], **({"max_tokens": 2} if path != "/tokenize" else {})}
    text, got = _openai_400(client, path, body)
    assert got == param and text.startswith(param + ": "), (got, text)
    later = {**body, "messages": [{"role": "user", "content": "AB"}, message]}   # the second message's index
    assert _openai_400(client, path, later)[1] == param.replace("[0]", "[1]", 1)


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


# A constraint the engine refuses names the field the client gave it in (one per request), the
# engine's reason after it; vLLM's structured_outputs by its member (structured_outputs.regex).
@pytest.mark.parametrize("path, body, param, starts", [
    pytest.param("/v1/completions", {"guided_regex": "("}, "guided_regex", "guided_regex: ", id="guided_regex"),
    pytest.param("/v1/completions", {"guided_json": {"type": "nope"}}, "guided_json", "guided_json: Invalid type",
                 id="guided_json-schema"),
    pytest.param("/v1/completions", {"guided_json": {"$ref": "#/$defs/missing"}}, "guided_json", "guided_json: ",
                 id="guided_json-ref"),
    pytest.param("/v1/completions", {"guided_json": "{oops"}, "guided_json",
                 "guided_json: expected a JSON schema", id="guided_json-text"),
    pytest.param("/v1/completions", {"guided_choice": ["", ""]}, "guided_choice",
                 "guided_choice: expected a list of one or more non-empty strings", id="guided_choice-empty"),
    pytest.param("/v1/completions", {"guided_grammar": "start: ("}, "guided_grammar", "guided_grammar: ",
                 id="guided_grammar"),
    pytest.param("/v1/chat/completions", {"response_format": _schema_format({"type": "nope"})}, "response_format",
                 "response_format.json_schema.schema: Invalid type", id="response_format-schema"),
    pytest.param("/v1/chat/completions", {"response_format": _schema_format({"$ref": "#/$defs/missing"})},
                 "response_format", "response_format.json_schema.schema: ", id="response_format-ref"),
    pytest.param("/v1/completions", {"structured_outputs": {"regex": "("}}, "structured_outputs",
                 "structured_outputs.regex: ", id="structured_outputs-regex"),
    pytest.param("/v1/chat/completions", {"structured_outputs": {"choice": [""]}}, "structured_outputs",
                 "structured_outputs.choice: expected a list", id="structured_outputs-choice"),
])
def test_a_refused_constraint_names_the_field_it_came_in(served, path, body, param, starts):
    client, _ = served
    prompt = {"prompt": "AB"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "AB"}]}
    message, got = _openai_400(client, path, {**prompt, **body, "max_tokens": 2})
    assert got == param and message.startswith(starts), (got, message)


def test_a_refused_constraint_on_v1_generate_is_named_as_structured_outputs(served):
    client, _ = served
    r = client.post("/v1/generate", json={"prompt": "AB", "max_new_tokens": 2, "structured_outputs": {"regex": "("}})
    assert r.status_code == 400 and error_message(r).startswith("structured_outputs.regex: "), r.text
