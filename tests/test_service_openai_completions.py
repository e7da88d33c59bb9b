"""The OpenAI-compatible completions route (service/routes_openai_completions.py; /v1/models:
routes_openai.py) through the official `openai` client against a live in-process server with
fake models (tests/openai_fake_server.py): models list and retrieve, completions as JSON and as
a stream (with usage), token-id prompts, stop strings, echo, n choices, null as the default,
the 4xx for what is unsupported, and the metrics they count. Chat is
test_service_openai_chat.py's, logprobs test_service_openai_logprobs.py's."""
import httpx
import pytest

openai = pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from openai_fake_server import CHAT  # noqa: E402

server, client = openai_fake_server.server, openai_fake_server.client   # this module's server


def test_models_lists_the_language_model(client):
    assert [m.id for m in client.models.list()] == ["lfm2"]


def test_models_retrieve_one_model(client):
    """GET /v1/models/{model}: the client's models.retrieve; a model not served is a 404."""
    card = client.models.retrieve("lfm2")
    assert (card.id, card.object, card.owned_by) == ("lfm2", "model", "dwserve")
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("gpt-4")
    assert "GET /v1/models" in exc.value.message and exc.value.type == "not_found_error"


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


def test_a_list_of_prompts_through_the_client(client):
    """OpenAI's batched prompts (texts or token id lists): n choices per prompt, prompt i's at
    indices i*n .. i*n+n-1; usage counts each prompt once."""
    r = client.completions.create(model="lfm2", prompt=["abc", "x"], max_tokens=2, temperature=0, n=2)
    assert [(c.index, c.text) for c in r.choices] == [(0, "de"), (1, "de"), (2, "yz"), (3, "yz")]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 8)
    r = client.completions.create(model="lfm2", prompt=[[65, 66], [70]], max_tokens=1, temperature=0)
    assert [c.text for c in r.choices] == ["c", "g"]   # ids 65, 66 = "ab"; 70 = "f"


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
    pytest.param(dict(logprobs=21), "BadRequestError", "logprobs", id="logprobs-21"),
    pytest.param(dict(max_tokens=0), "BadRequestError", "max_tokens 0 without echo", id="zero-tokens-no-echo"),
    pytest.param(dict(prompt=["a"] * 65), "BadRequestError", "at most 64 prompts per request (DWSERVE_MAX_PROMPTS)",
                 id="prompts-above-limit"),
    pytest.param(dict(prompt=[[65], [10_000]]), "BadRequestError", "prompt[1]: token ids must be in",
                 id="second-prompt-out-of-vocab"),
    pytest.param(dict(model="gpt-4"), "NotFoundError", "GET /v1/models", id="unknown-model"),
    pytest.param(dict(max_tokens=10_000), "BadRequestError", "max_new_tokens", id="too-many-tokens"),
    pytest.param(dict(prompt=[10_000]), "BadRequestError", "prompt: token ids must be in", id="id-out-of-vocab"),
    pytest.param(dict(temperature=3.0), "BadRequestError", "temperature", id="temperature"),
    pytest.param(dict(stream_options={"include_usage": True}), "BadRequestError", "stream_options without stream",
                 id="stream-options-without-stream"),
    # JSON true/false is no number (pydantic's lax mode had read them as 1/0)
    pytest.param(dict(temperature=True), "BadRequestError", "temperature: expected a number", id="temperature-true"),
    pytest.param(dict(n=True), "BadRequestError", "n: expected a number", id="n-true"),
    pytest.param(dict(logprobs=True), "BadRequestError", "logprobs: expected a number", id="logprobs-true"),
    pytest.param(dict(prompt=[True, 3]), "BadRequestError", "token ids must be integers", id="token-id-true"),
])
def test_unsupported_or_bad_requests_are_4xx_naming_the_field(client, kwargs, error, needle):
    args = {"model": "lfm2", "prompt": "a", "max_tokens": 2, **kwargs}
    with pytest.raises(getattr(openai, error)) as exc:
        client.completions.create(**args)
    assert needle in exc.value.message   # the client shows OpenAI's error.message (errors.error_body)


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


def test_n_choices_greedy_and_seeded(client):
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=4, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and {c.text for c in r.choices} == {"defg"}
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 12)
    # sampled: choice i is what one request with seed + i gets
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=6, temperature=1.0, seed=5, n=3)
    alone = [client.completions.create(model="lfm2", prompt="abc", max_tokens=6, temperature=1.0, seed=5 + i)
             .choices[0].text for i in range(3)]
    assert [c.text for c in r.choices] == alone and len(set(alone)) > 1


def test_continuous_usage_stats_give_each_chunk_its_choice_usage(client):
    """vLLM's stream_options.continuous_usage_stats (with include_usage): every chunk carries its
    choice's usage so far, counting up to the final usage; OpenAI's include_obfuscation is
    accepted (dwserve pads nothing)."""
    chunks = list(client.completions.create(
        model="lfm2", prompt=["abc", "x"], max_tokens=4, temperature=0, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True, "include_obfuscation": False}))
    per_choice: dict[int, list] = {}
    for c in chunks[:-1]:
        (choice,) = c.choices
        per_choice.setdefault(choice.index, []).append(c.usage)
    assert sorted(per_choice) == [0, 1]
    for i, prompt_tokens in ((0, 3), (1, 1)):
        seen = [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in per_choice[i]]
        assert all(p == prompt_tokens and t == p + k for p, k, t in seen)
        counts = [k for _, k, _ in seen]
        assert counts == sorted(counts) and counts[-1] == 4 and counts[0] >= 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    plain = list(client.completions.create(model="lfm2", prompt="abc", max_tokens=2, temperature=0, stream=True,
                                           stream_options={"include_usage": True}))
    assert all(c.usage is None for c in plain[:-1])   # without continuous_usage_stats: the last chunk only
