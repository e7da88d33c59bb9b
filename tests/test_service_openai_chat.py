"""The OpenAI-compatible chat completions route (service/routes_openai_chat.py) through the official
`openai` client against a live in-process server with fake models (tests/openai_fake_server.py):
replies as JSON and as a stream (with usage), message forms, the default max_tokens, n choices
streamed interleaved by index, the 4xx for what is unsupported, and the metrics they count."""
import httpx
import pytest

openai = pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from openai_fake_server import CHAT, _fake_answer  # noqa: E402

server, client = openai_fake_server.server, openai_fake_server.client   # this module's server


def test_chat_completion_as_json(client):
    r = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=4, temperature=0)
    assert r.object == "chat.completion" and r.model == "lfm2" and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    want, prompt_len = _fake_answer(CHAT, 4)
    assert choice.message.role == "assistant" and choice.message.content == want
    assert choice.finish_reason == "length" and choice.index == 0
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (prompt_len, 4, prompt_len + 4)


def test_chat_message_forms(client):
    """developer is the newer name of system; text parts join into one content."""
    same = [{"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}]
    a = client.chat.completions.create(model="lfm2", messages=CHAT, max_completion_tokens=3, temperature=0)
    b = client.chat.completions.create(model="lfm2", messages=same, max_completion_tokens=3, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.prompt_tokens == b.usage.prompt_tokens and a.usage.completion_tokens == 3


def test_chat_default_max_tokens_fills_the_room_left(client):
    """No max_tokens: as many as max_new_tokens (64) and max_sequence_length (128) allow."""
    long_chat = [{"role": "user", "content": "x" * 80}]
    r = client.chat.completions.create(model="lfm2", messages=long_chat, temperature=0)
    assert r.usage.prompt_tokens == 80 + len("<user><assistant>")
    assert r.usage.completion_tokens == 128 - r.usage.prompt_tokens
    r = client.chat.completions.create(model="lfm2", messages=CHAT, temperature=0, stop=["N"])
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 64


def test_chat_stream_with_usage(client):
    chunks = list(client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=5, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert all(c.object == "chat.completion.chunk" for c in chunks) and len({c.id for c in chunks}) == 1
    assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
    assert "".join(d.content or "" for d in deltas) == _fake_answer(CHAT, 5)[0]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


@pytest.mark.parametrize("kwargs, error, needle", [
    pytest.param(dict(n=9), "BadRequestError", "DWSERVE_MAX_CHOICES", id="n-above-limit"),
    pytest.param(dict(top_logprobs=2), "BadRequestError", "top_logprobs without logprobs", id="top-without"),
    pytest.param(dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
                 "BadRequestError", "tools", id="tools"),
    pytest.param(dict(response_format={"type": "grammar"}), "BadRequestError", "response_format", id="unknown-format"),
    pytest.param(dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                 "BadRequestError", "only text parts", id="image-part"),
    # a text part without its text said "only text parts are supported, got type 'text'"
    pytest.param(dict(messages=[{"role": "user", "content": [{"type": "text"}]}]), "BadRequestError",
                 "messages[0].content[0].text: expected a string, got none", id="text-part-without-text"),
    pytest.param(dict(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), "BadRequestError",
                 "messages[0].content[0].text: expected a string, got int", id="text-part-number"),
    pytest.param(dict(messages=[{"role": "tool", "content": "1", "tool_call_id": "a"}]),
                 "BadRequestError", "tool messages", id="tool-role"),
    pytest.param(dict(messages=[]), "BadRequestError", "messages", id="no-messages"),
    pytest.param(dict(messages=[{"role": "robot", "content": "x"}]), "BadRequestError", "role", id="bad-role"),
    pytest.param(dict(messages=[{"role": "user", "content": "y" * 200}]), "BadRequestError",
                 "max_sequence_length", id="too-long"),
    pytest.param(dict(model="gpt-4"), "NotFoundError", "GET /v1/models", id="unknown-model"),
    pytest.param(dict(max_tokens=10_000), "BadRequestError", "max_new_tokens", id="too-many-tokens"),
    pytest.param(dict(stream_options={"include_usage": True}), "BadRequestError", "stream_options without stream",
                 id="stream-options-without-stream"),
])
def test_chat_unsupported_or_bad_requests_are_4xx_naming_the_field(client, kwargs, error, needle):
    args = {"model": "lfm2", "messages": CHAT, "max_tokens": 2, **kwargs}
    with pytest.raises(getattr(openai, error)) as exc:
        client.chat.completions.create(**args)
    assert needle in str(exc.value.body)


def test_chat_is_counted_as_lfm2_requests(server, client):
    client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=2, extra_body={"depthwise_impl": "native"})
    assert 'dwserve_requests_total{impl="native",model="lfm2",status="200"}' in httpx.get(server + "/metrics").text


def test_n_choices_stream_interleaved_by_index(client):
    chunks = list(client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=5, temperature=1.0,
                                                 seed=11, n=2, stream=True, stream_options={"include_usage": True}))
    whole = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=5, temperature=1.0, seed=11, n=2)
    for i in range(2):
        deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].index == i]
        assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
        assert "".join(d.content or "" for d in deltas) == whole.choices[i].message.content
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].index == i]
        assert finishes[-1] == "length" and finishes.count("length") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_chat_continuous_usage_stats(client):
    """Chat's stream with vLLM's continuous_usage_stats: the role chunk at 0 completion tokens,
    then each chunk its choice's count so far, the finish chunk the choice's total."""
    from openai_fake_server import CHAT as messages
    chunks = list(client.chat.completions.create(
        model="lfm2", messages=messages, max_tokens=3, temperature=0, stream=True, n=2,
        stream_options={"include_usage": True, "continuous_usage_stats": True}))
    by_choice: dict[int, list[int]] = {}
    for c in chunks[:-1]:
        by_choice.setdefault(c.choices[0].index, []).append(c.usage.completion_tokens)
    assert by_choice[0][0] == by_choice[1][0] == 0                       # the role chunks
    assert all(v == sorted(v) and v[-1] == 3 for v in by_choice.values())
    prompt = chunks[-1].usage.prompt_tokens
    assert all(c.usage.prompt_tokens == prompt for c in chunks[:-1]) and chunks[-1].usage.completion_tokens == 6
