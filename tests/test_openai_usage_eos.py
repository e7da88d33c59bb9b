"""`usage.completion_tokens` counts every token the model generated for a choice, the
end-of-sequence token that ended it included, as vLLM and OpenAI count it (it was generated;
it has no text). Checked on /v1/generate, /v1/completions, /v1/chat/completions and Triton's
generate route, JSON and streamed, against the fake models with 'H' made the eos token (FakeLM
counts up one character per token, so a prompt ending 'EF' generates 'G' and then eos)."""
import json

import pytest

from inprocess_app import eos_fake_client


@pytest.fixture(scope="module")
def client():
    with eos_fake_client() as c:
        yield c


def _sse(client, path: str, body: dict) -> list[dict]:
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def test_generate_counts_the_eos_that_ended_it(client):
    body = {"prompt": "EF", "max_new_tokens": 8, "temperature": 0}
    r = client.post("/v1/generate", json=body).json()
    assert (r["text"], r["finish_reason"], len(r["token_ids"])) == ("G", "stop", 1)
    assert r["usage"]["completion_tokens"] == 2                    # G, eos
    assert _sse(client, "/v1/generate", body)[-1]["usage"]["completion_tokens"] == 2
    triton = client.post("/v2/models/lfm2/generate", json={"text_input": "EF", "max_tokens": 8}).json()
    assert triton["usage"]["completion_tokens"] == 2
    # not by eos: what was generated, as before (a stop string's tokens counted, nothing more)
    r = client.post("/v1/generate", json={**body, "prompt": "AB", "stop": ["DE"]}).json()
    assert (r["text"], r["finish_reason"], r["usage"]["completion_tokens"]) == ("C", "stop", 3)
    r = client.post("/v1/generate", json={**body, "prompt": "AB", "max_new_tokens": 3}).json()
    assert (r["finish_reason"], r["usage"]["completion_tokens"]) == ("length", 3)


def test_openai_usage_counts_the_eos_json_and_streamed(client):
    body = {"prompt": "EF", "max_tokens": 8, "temperature": 0, "n": 2}
    r = client.post("/v1/completions", json=body).json()
    assert [c["text"] for c in r["choices"]] == ["G", "G"] and r["usage"]["completion_tokens"] == 4
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + 4
    streamed = _sse(client, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert streamed[-1]["usage"] == r["usage"]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "temperature": 0}
    r = client.post("/v1/chat/completions", json=chat).json()        # '<user>hi<assistant>' -> '?@ABCDEFG', eos
    assert r["choices"][0]["message"]["content"] == "?@ABCDEFG" and r["choices"][0]["finish_reason"] == "stop"
    assert r["usage"]["completion_tokens"] == 10
    streamed = _sse(client, "/v1/chat/completions", {**chat, "stream_options": {"include_usage": True}})
    assert streamed[-1]["usage"] == r["usage"]
