"""The OpenAI-compatible routes as the official `openai` client's higher-level helpers, vLLM-style
clients and load generators use them, against a live in-process server with fake models
(tests/openai_fake_server.py; FakeLM: next id = last + 1, one character per token). Each test here
failed before its fix."""
import time

import pytest

openai = pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from openai_fake_server import live_server  # noqa: E402
from error_bodies import error_message

CHAT = [{"role": "user", "content": "hi there"}]
server, client = openai_fake_server.server, openai_fake_server.client   # this module's server


def test_chat_stream_helper_keeps_each_choices_logprobs_once(client):
    """The client's `chat.completions.stream()` accumulates chunks into one completion; a choice
    it sees first (index >= 1) is started from that chunk and then extended by it again, so
    its logprobs came back twice whenever its first chunk carried any. OpenAI and vLLM open
    each choice with a role chunk (content "", no logprobs), which the helper takes as is."""
    args = dict(model="lfm2", messages=CHAT, max_tokens=6, temperature=0, stop=["C"], n=3,
                logprobs=True, top_logprobs=1)
    with client.chat.completions.stream(**args) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    whole = client.chat.completions.create(**args)
    for got, want in zip(final.choices, whole.choices, strict=True):
        assert got.message.content == want.message.content and got.finish_reason == "stop"
        assert [e.token for e in got.logprobs.content] == [e.token for e in want.logprobs.content]

    chunks = [c.choices[0] for c in client.chat.completions.create(**args, stream=True) if c.choices]
    for i in range(3):
        first = next(c for c in chunks if c.index == i)
        assert (first.delta.role, first.delta.content, first.logprobs) == ("assistant", "", None)


def test_a_stream_cut_by_the_request_timeout_says_so(monkeypatch):
    """A token that does not come within DWSERVE_REQUEST_TIMEOUT_S once the reply has started
    ends the stream with an in-band error; it read "TimeoutError: " (the builtin's empty text),
    where the same timeout before the first byte is a 503 naming the setting."""
    from service.testing import FakeContinuousBatch

    step = FakeContinuousBatch.step

    def stalling(self):   # the fourth decode step takes longer than the request timeout
        if len(self.steps) == 3:
            time.sleep(1.0)
        return step(self)

    monkeypatch.setattr(FakeContinuousBatch, "step", stalling)
    with live_server(request_timeout_s=0.5) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        texts = []
        with pytest.raises(openai.APIError) as exc:
            for chunk in client.completions.create(model="lfm2", prompt="ab", max_tokens=8, temperature=0,
                                                   stream=True):
                texts.append(chunk.choices[0].text)
        assert "".join(texts) == "cde"
        # OpenAI's error object in the event: the client raises with its message (a plain string
        # gave "An error occurred during streaming")
        assert "DWSERVE_REQUEST_TIMEOUT_S" in exc.value.message and exc.value.type == "server_error", exc.value.body


@pytest.mark.parametrize("route, args, name", [
    pytest.param("completions", dict(prompt="ab", max_tokens=1000), "max_tokens", id="completions"),
    pytest.param("chat", dict(messages=CHAT, max_tokens=1000), "max_tokens", id="chat-max_tokens"),
    pytest.param("chat", dict(messages=CHAT, max_completion_tokens=1000), "max_completion_tokens",
                 id="chat-max_completion_tokens"),
])
def test_token_limit_errors_name_the_field_sent(client, route, args, name):
    """Past the server's limits, the 400 names the field the client sent (it said
    'max_new_tokens', /v1/generate's name, which an OpenAI request has no field for)."""
    create = client.completions.create if route == "completions" else client.chat.completions.create
    with pytest.raises(openai.BadRequestError) as exc:
        create(model="lfm2", **args)
    assert exc.value.body["message"].startswith(f"{name}: at most 64"), exc.value.body
    with pytest.raises(openai.BadRequestError) as exc:
        create(model="lfm2", **{**args, name: 60}, extra_body={"prompt": "x" * 80} if route == "completions"
               else {"messages": [{"role": "user", "content": "x" * 80}]})
    assert f"+ {name} (60) exceeds 128 tokens" in exc.value.body["message"], exc.value.body


def test_a_chat_too_long_to_answer_says_so(client):
    """Without max_tokens a chat takes the room its prompt leaves; with none left, the 400 said
    'prompt (217 tokens) + max_new_tokens (1) exceeds 128 tokens', a field the client never sent."""
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="lfm2", messages=[{"role": "user", "content": "y" * 200}])
    body = exc.value.body["message"]
    assert body.startswith("messages: ") and "max_new_tokens" not in body and "max_sequence_length" in body, body


def test_triton_generate_limit_names_max_tokens(server):
    import httpx

    r = httpx.post(server + "/v2/models/lfm2/generate", json={"text_input": "x", "max_tokens": 99})
    assert r.status_code == 400 and error_message(r).startswith("max_tokens: at most 64"), r.text


@pytest.mark.parametrize("top_k", [-1, 0])
def test_top_k_off_as_vllm_writes_it(client, top_k):
    """vLLM's extension top_k takes -1 (and 0) for "off", as dwserve's Triton generate route
    does; the OpenAI routes answered a 422 'greater than or equal to 1'."""
    args = dict(model="lfm2", prompt="ab", max_tokens=4, temperature=1.0, seed=3)
    plain = client.completions.create(**args).choices[0].text
    assert client.completions.create(**args, extra_body={"top_k": top_k}).choices[0].text == plain
    chat = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=2, extra_body={"top_k": top_k})
    assert chat.choices[0].finish_reason == "length"
