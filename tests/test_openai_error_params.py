"""OpenAI's `param` of the 400s a request's values get past its schema (fake models, in-process):
the field the client sent, and the message names it as the client called it. Each case here
answered `param: null` (or the wrong field) before: the code that raised named the field
/v1/generate calls it (`input_ids`), or none."""
import pytest

import inprocess_app
from error_bodies import error_message

served = inprocess_app.served   # the module's client of the fake models (vocab_size 96)


def _openai_400(client, path, body):
    r = client.post(path, json=body)
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
