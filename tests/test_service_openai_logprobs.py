"""Logprobs on the OpenAI-compatible routes and /v1/generate, through the official `openai`
client and httpx against a live in-process server with fake models
(tests/openai_fake_server.py): completions' and chat's logprobs and top alternatives, none for
the tokens that spelled a stop string, streamed chunks that add up to the whole reply's, and
/v1/generate's logprobs as JSON and in its stream events."""
import httpx
import pytest

pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from openai_fake_server import CHAT, _fake_answer  # noqa: E402

server, client = openai_fake_server.server, openai_fake_server.client   # this module's server


def test_completion_logprobs(client):
    """FakeLM's logprobs: -0.5 for its pick, then -1.5, -2.5 for the next ids."""
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp.tokens == list("defg") and lp.token_logprobs == [-0.5] * 4 and lp.text_offset == [0, 1, 2, 3]
    assert lp.top_logprobs[0] == {"d": -0.5, "e": -1.5}
    r = client.completions.create(model="lfm2", prompt="abc", max_tokens=2, temperature=0, logprobs=0)
    assert r.choices[0].logprobs.top_logprobs == [{"d": -0.5}, {"e": -0.5}]   # the chosen token's, always
    assert r.choices[0].logprobs.token_logprobs == [-0.5, -0.5]
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
