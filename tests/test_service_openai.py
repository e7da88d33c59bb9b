"""The OpenAI-compatible routes (service/routes_openai.py) through the official `openai` client
against a live in-process server with fake models: models list, completions as JSON and as
a stream (with usage), token-id prompts, stop strings, and the 4xx for what is unsupported."""
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from test_deploy_loadtest import free_port, wait_ready  # noqa: E402


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    port = free_port()
    app = create_app(Settings(port=port, warmup=False, max_new_tokens=64, max_sequence_length=128),
                     models=fake_models(), hooks=fake_hooks())
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, 30)
    yield url
    srv.should_exit = True
    time.sleep(0.2)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_language_model(client):
    assert [m.id for m in client.models.list()] == ["lfm2"]


def test_models_retrieve_one_model(client):
    """GET /v1/models/{model}: the client's models.retrieve; a model not served is a 404."""
    card = client.models.retrieve("lfm2")
    assert (card.id, card.object, card.owned_by) == ("lfm2", "model", "dwserve")
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("gpt-4")
    assert "GET /v1/models" in exc.value.body


def test_completion_as_json(client):
    # FakeLM: next id = last + 1, ids are characters - 32: "abc" -> "defg"
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=4, temperature=0)
    assert r.object == "text_completion" and r.model == "lfm2" and r.id.startswith("cmpl-")
    (choice,) = r.choices
    assert choice.text == "defg" and choice.finish_reason == "length" and choice.index == 0
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 4, 7)


def test_token_id_prompt_and_stop_string(client):
    r = client.completions.create(model="lfm2", prompt=[65, 66], max_tokens=10, temperature=0, stop=["g"])
    assert r.choices[0].text == "cdef" and r.choices[0].finish_reason == "stop"     # ids 65, 66 = "ab"
    r = client.completions.create(model="lfm2", prompt=["x"], max_tokens=2, temperature=0)   # a list of one
    assert r.choices[0].text == "yz"


def test_stream_with_usage(client):
    chunks = list(client.completions.create(model="lfm2", prompt="a", max_tokens=5, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == "bcdef" and len(texts) >= 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_echo_puts_the_prompt_before_each_choice(client):
    r = client.completions.create(model="lfm2", prompt="ab", max_tokens=3, temperature=0, echo=True, n=2)
    assert [c.text for c in r.choices] == ["abcde", "abcde"] and r.usage.completion_tokens == 6
    only = client.completions.create(model="lfm2", prompt="ab", max_tokens=0, echo=True)
    assert only.choices[0].text == "ab" and only.usage.completion_tokens == 0
    assert only.choices[0].finish_reason == "length" and only.usage.prompt_tokens == 2
    chunks = list(client.completions.create(model="lfm2", prompt="ab", max_tokens=3, temperature=0, echo=True,
                                            stream=True))
    assert [c.choices[0].text for c in chunks][:2] == ["ab", "c"] and "".join(c.choices[0].text for c in chunks) == "abcde"
    chunks = list(client.completions.create(model="lfm2", prompt="ab", max_tokens=0, echo=True, stream=True, n=2,
                                            stream_options={"include_usage": True}))
    assert sorted((c.choices[0].index, c.choices[0].text, c.choices[0].finish_reason) for c in chunks if c.choices) \
        == [(0, "", "length"), (0, "ab", None), (1, "", "length"), (1, "ab", None)]
    assert chunks[-1].usage.completion_tokens == 0 and chunks[-1].usage.prompt_tokens == 2


@pytest.mark.parametrize("kwargs, error, needle", [
    pytest.param(dict(n=9), "BadRequestError", "DWSERVE_MAX_CHOICES", id="n-above-limit"),
    pytest.param(dict(n=2, best_of=3), "BadRequestError", "best_of", id="best_of"),
    pytest.param(dict(logprobs=21), "UnprocessableEntityError", "logprobs", id="logprobs-21"),
    pytest.param(dict(max_tokens=0), "BadRequestError", "max_tokens 0 without echo", id="zero-tokens-no-echo"),
    pytest.param(dict(prompt=["a", "b"]), "BadRequestError", "one prompt per request", id="two-prompts"),
    pytest.param(dict(model="gpt-4"), "NotFoundError", "GET /v1/models", id="unknown-model"),
    pytest.param(dict(max_tokens=10_000), "BadRequestError", "max_new_tokens", id="too-many-tokens"),
    pytest.param(dict(prompt=[10_000]), "BadRequestError", "token ids must be in", id="id-out-of-vocab"),
    pytest.param(dict(temperature=3.0), "UnprocessableEntityError", "temperature", id="temperature"),
    pytest.param(dict(stream_options={"include_usage": True}), "BadRequestError", "stream_options without stream",
                 id="stream-options-without-stream"),
    # JSON true/false is no number (pydantic's lax mode had read them as 1/0)
    pytest.param(dict(temperature=True), "UnprocessableEntityError", "temperature: expected a number", id="temperature-true"),
    pytest.param(dict(n=True), "UnprocessableEntityError", "n: expected a number", id="n-true"),
    pytest.param(dict(logprobs=True), "UnprocessableEntityError", "logprobs: expected a number", id="logprobs-true"),
    pytest.param(dict(prompt=[True, 3]), "UnprocessableEntityError", "token ids must be integers", id="token-id-true"),
])
def test_unsupported_or_bad_requests_are_4xx_naming_the_field(client, kwargs, error, needle):
    args = {"model": "lfm2", "prompt": "a", "max_tokens": 2, **kwargs}
    with pytest.raises(getattr(openai, error)) as exc:
        client.completions.create(**args)
    assert needle in exc.value.body     # the client unwraps dwserve's {"error": "..."} to the message


def test_explicit_none_means_the_default(client):
    """The openai client sends null for an explicit None, and OpenAI's schema makes these
    fields nullable: null is the default, not a 422."""
    nulls = dict(temperature=None, top_p=None, n=None, stream=None, presence_penalty=None, frequency_penalty=None)
    args = dict(model="lfm2", prompt="abc", max_tokens=4, seed=3)
    r = client.completions.create(**args, **nulls, echo=None)
    assert [c.text for c in r.choices] == [c.text for c in client.completions.create(**args).choices]
    chat = dict(model="lfm2", messages=CHAT, max_tokens=4, seed=3)
    r = client.chat.completions.create(**chat, **nulls)
    assert [c.message.content for c in r.choices] == \
        [c.message.content for c in client.chat.completions.create(**chat).choices]


def test_completions_are_counted_as_lfm2_requests(server, client):
    client.completions.create(model="lfm2", prompt="a", max_tokens=2, temperature=0, extra_body={"depthwise_impl": "per_group"})
    text = httpx.get(server + "/metrics").text
    assert 'dwserve_requests_total{impl="per_group",model="lfm2",status="200"}' in text
    assert 'dwserve_generated_tokens_total{impl="per_group",model="lfm2"}' in text


# --- chat completions ------------------------------------------------------------------------

from service.testing import FakeTokenizer  # noqa: E402

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]


def _fake_answer(messages, n):
    """What FakeLM answers greedily: the ids after the rendered prompt's last one."""
    tok = FakeTokenizer(96)
    last = tok.apply_chat_template(messages)[-1]
    return tok.decode([(last + 1 + i) % 95 for i in range(n)]), len(tok.render_chat(messages))


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
    pytest.param(dict(response_format={"type": "json_object"}), "BadRequestError", "response_format", id="json-mode"),
    pytest.param(dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                 "BadRequestError", "only text parts", id="image-part"),
    pytest.param(dict(messages=[{"role": "tool", "content": "1", "tool_call_id": "a"}]),
                 "BadRequestError", "tool messages", id="tool-role"),
    pytest.param(dict(messages=[]), "UnprocessableEntityError", "messages", id="no-messages"),
    pytest.param(dict(messages=[{"role": "robot", "content": "x"}]), "UnprocessableEntityError", "role", id="bad-role"),
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


# --- n choices -------------------------------------------------------------------------------

def test_n_choices_greedy_and_seeded(client):
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=4, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and {c.text for c in r.choices} == {"defg"}
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 12)
    # sampled: choice i is what one request with seed + i gets
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=6, temperature=1.0, seed=5, n=3)
    alone = [client.completions.create(model="lfm2", prompt="abc", max_tokens=6, temperature=1.0, seed=5 + i)
             .choices[0].text for i in range(3)]
    assert [c.text for c in r.choices] == alone and len(set(alone)) > 1


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


# --- logprobs --------------------------------------------------------------------------------

def test_completion_logprobs(client):
    """FakeLM's logprobs: -0.5 for its pick, then -1.5, -2.5 for the next ids."""
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp.tokens == list("defg") and lp.token_logprobs == [-0.5] * 4 and lp.text_offset == [0, 1, 2, 3]
    assert lp.top_logprobs[0] == {"d": -0.5, "e": -1.5}
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=2, temperature=0, logprobs=0)
    assert r.choices[0].logprobs.top_logprobs is None and r.choices[0].logprobs.token_logprobs == [-0.5, -0.5]
    assert client.completions.create(model="lfm2", prompt="abc", max_tokens=2).choices[0].logprobs is None


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=3, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(c.token for c in content) == r.choices[0].message.content
    assert all(c.logprob == -0.5 and c.bytes == list(c.token.encode()) for c in content)
    assert [t.logprob for t in content[0].top_logprobs] == [-0.5, -1.5, -2.5]
    r = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=2, logprobs=True)
    assert all(c.top_logprobs == [] for c in r.choices[0].logprobs.content)


def test_logprobs_leave_out_the_stop_strings_tokens(client):
    """A stop string is no part of the reply, nor are the logprobs of the tokens that spelled
    it (they were generated: usage counts them); streamed, the chunks carry the same."""
    args = dict(model="lfm2", prompt="abc", max_tokens=8, temperature=0, logprobs=1, stop=["fg"])
    r = client.completions.create(**args)
    lp = r.choices[0].logprobs
    assert (r.choices[0].text, lp.tokens, lp.text_offset) == ("de", ["d", "e"], [0, 1])
    assert r.usage.completion_tokens == 4                                     # d e f g
    chunks = [c.choices[0] for c in client.completions.create(**args, stream=True) if c.choices]
    assert "".join(c.text for c in chunks) == "de"
    assert sum((c.logprobs.tokens for c in chunks if c.logprobs), []) == ["d", "e"]
    assert sum((c.logprobs.text_offset for c in chunks if c.logprobs), []) == [0, 1]
    want = _fake_answer(CHAT, 8)[0]
    chat = dict(model="lfm2", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, stop=[want[3:5]])
    r = client.chat.completions.create(**chat)
    assert r.choices[0].message.content == want[:3] and r.choices[0].finish_reason == "stop"
    assert "".join(e.token for e in r.choices[0].logprobs.content) == want[:3]
    streamed = [e.token for c in client.chat.completions.create(**chat, stream=True)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert "".join(streamed) == want[:3]


def test_generate_logprobs_and_stop_string(server):
    r = httpx.post(server + "/v1/generate", json={"prompt": "abc", "max_new_tokens": 8, "logprobs": 1,
                                                  "stop": ["g"]}).json()
    assert r["text"] == "def" and [t["token_id"] for t in r["logprobs"]] == r["token_ids"]
    assert r["logprobs"][0] == {"token_id": r["token_ids"][0], "logprob": -0.5,
                                "top": [{"token_id": r["token_ids"][0], "logprob": -0.5}]}


def test_streamed_logprobs_add_up_to_the_replys(client):
    """Each chunk carries the logprobs of the tokens its text completes; together, the reply's."""
    args = dict(model="lfm2", prompt="abc", max_tokens=6, temperature=0, logprobs=2, stop=["h"])
    whole = client.completions.create(**args).choices[0].logprobs
    chunks = [c for c in client.completions.create(**args, stream=True) if c.choices and c.choices[0].logprobs]
    assert sum((c.choices[0].logprobs.tokens for c in chunks), []) == whole.tokens
    assert sum((c.choices[0].logprobs.text_offset for c in chunks), []) == whole.text_offset
    assert sum((c.choices[0].logprobs.top_logprobs for c in chunks), []) == whole.top_logprobs
    chat = dict(model="lfm2", messages=CHAT, max_tokens=4, temperature=0, logprobs=True, top_logprobs=1)
    whole = client.chat.completions.create(**chat).choices[0].logprobs.content
    streamed = [e for c in client.chat.completions.create(**chat, stream=True)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in streamed] == \
           [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in whole]


def test_generate_stream_events_carry_logprobs(server):
    import json as _json
    body = {"prompt": "abc", "max_new_tokens": 5, "logprobs": 0, "stream": True}
    with httpx.stream("POST", server + "/v1/generate", json=body) as r:
        events = [_json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    final = events[-1]
    assert final["done"] and [e["token_id"] for e in final["logprobs"]] == final["token_ids"]
    assert sum((e["logprobs"] for e in events[:-1]), []) == final["logprobs"]
