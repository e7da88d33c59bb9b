"""Request fields OpenAI clients and frameworks send besides the ones dwserve computes with,
through the official `openai` client and as LangChain's ChatOpenAI writes its requests, against
a live in-process server with fake models (tests/openai_fake_server.py). Bookkeeping fields
are accepted and ignored, as vLLM does (they were a 422 'Extra inputs are not permitted');
fields that ask for what dwserve cannot do are a 400 naming them."""
import httpx
import pytest

openai = pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from openai_fake_server import CHAT  # noqa: E402
from error_bodies import error_message  # noqa: E402

server, client = openai_fake_server.server, openai_fake_server.client   # this module's server

BOOKKEEPING = dict(store=True, metadata={"team": "search", "run": "7"}, service_tier="auto", user="u-1",
                   safety_identifier="hash-1", prompt_cache_key="sys-v2")


def test_bookkeeping_fields_are_accepted_and_change_nothing(client):
    """store/metadata/service_tier/user/safety_identifier/prompt_cache_key: nothing is stored,
    tiered or billed here, so the reply is the one without them."""
    args = dict(model="lfm2", messages=CHAT, max_tokens=4, temperature=0)
    plain = client.chat.completions.create(**args).choices[0].message.content
    got = client.chat.completions.create(**args, **BOOKKEEPING, parallel_tool_calls=False)
    assert got.choices[0].message.content == plain
    text = dict(model="lfm2", prompt="abc", max_tokens=3, temperature=0)
    assert client.completions.create(**text, user="u-1", extra_body={
        k: v for k, v in BOOKKEEPING.items() if k != "user"}).choices[0].text == "def"


def test_langchain_chat_openai_requests_are_served(server):
    """The bodies langchain_openai's ChatOpenAI posts (its _default_params: model, stream, n,
    temperature, then max_completion_tokens, store and service_tier when set; streamed with
    stream_options.include_usage), JSON and streamed."""
    body = {"messages": CHAT, "model": "lfm2", "stream": False, "n": 1, "temperature": 0.7,
            "max_completion_tokens": 5, "store": False, "service_tier": "default"}
    r = httpx.post(server + "/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5
    with httpx.stream("POST", server + "/v1/chat/completions",
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]" and '"usage"' in lines[-2], lines[-3:]


@pytest.mark.parametrize("field, value, noop", [
    pytest.param("prediction", {"type": "content", "content": "x"}, None, id="prediction"),
    pytest.param("reasoning_effort", "low", None, id="reasoning_effort"),
    pytest.param("modalities", ["text", "audio"], ["text"], id="modalities"),
    pytest.param("audio", {"voice": "alloy", "format": "wav"}, None, id="audio"),
    pytest.param("functions", [{"name": "f", "parameters": {}}], [], id="functions"),
    pytest.param("function_call", "auto", "none", id="function_call"),
])
def test_fields_dwserve_cannot_honour_are_a_400_naming_them(server, field, value, noop):
    """Each asks for what a text reply from this model cannot carry (a prediction's accepted
    tokens, reasoning, audio, function calls): ignoring it would answer another question, so
    it is a 400 that names it, and a 200 at its no-op value."""
    body = {"model": "lfm2", "messages": CHAT, "max_tokens": 2}
    r = httpx.post(server + "/v1/chat/completions", json={**body, field: value})
    assert r.status_code == 400 and field in error_message(r), r.text
    if noop is not None:
        assert httpx.post(server + "/v1/chat/completions", json={**body, field: noop}).status_code == 200


def test_a_reply_message_sent_back_in_the_history_is_accepted(client):
    """`messages.append(reply.choices[0].message.model_dump())`, the usual chat loop, sends
    refusal, annotations, audio and function_call back as null: each was a 422."""
    first = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=3, temperature=0)
    history = CHAT + [first.choices[0].message.model_dump(), {"role": "user", "content": "more"}]
    again = httpx.post(str(client.base_url) + "chat/completions",
                       json={"model": "lfm2", "messages": history, "max_tokens": 2})
    assert again.status_code == 200, again.text
    refused = {"role": "assistant", "content": None, "refusal": "no"}
    assert client.chat.completions.create(model="lfm2", messages=CHAT + [refused], max_tokens=1).choices


VLLM_DEFAULTS = dict(repetition_penalty=1.0, min_p=0.0, min_tokens=0, stop_token_ids=[], skip_special_tokens=True,
                     include_stop_str_in_output=False)


def test_vllm_sampling_extensions_at_their_defaults_are_served(client, server):
    """vLLM-targeted clients spell out vLLM's sampling defaults: taken (each was a 422), the
    reply unchanged (other values are honoured: test_service_sampling_extensions.py,
    test_skip_special_tokens.py)."""
    args = dict(model="lfm2", prompt="abc", max_tokens=3, temperature=0)
    assert client.completions.create(**args, extra_body=VLLM_DEFAULTS).choices[0].text == "def"
    chat = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=2, extra_body=VLLM_DEFAULTS)
    assert chat.choices[0].finish_reason == "length"
