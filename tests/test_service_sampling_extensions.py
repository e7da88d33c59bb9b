"""transformers'/vLLM's sampling controls through every generate route: stop_token_ids,
include_stop_str_in_output and min_tokens on the live fake server (FakeLM answers "abc" with
"defgh...", one character per token, id = ord - 32), through /v1/generate (JSON and streamed),
the OpenAI routes (vLLM's extensions) and Triton's generate extension; repetition_penalty and
min_p reach the engine: the real lfm2-demo gives what LFM2ForCausalLM.generate gives. Stops at
a character split over two tokens (a byte-level tokenizer's) on an in-process app."""
import json

import httpx
import pytest

openai = pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from error_bodies import error_message  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from openai_fake_server import CHAT  # noqa: E402
from server_process import client_ready  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.testing import FakeTokenizer, fake_hooks, fake_models  # noqa: E402

server, client = openai_fake_server.server, openai_fake_server.client   # this module's server


def tid(ch: str) -> int:
    return ord(ch) - 32


def _generate(server, stream=False, **fields):
    """/v1/generate on "abc" -> (final reply, streamed text or None)."""
    body = {"prompt": "abc", "max_new_tokens": 8, **fields}
    if not stream:
        r = httpx.post(server + "/v1/generate", json=body)
        assert r.status_code == 200, r.text
        return r.json(), None
    with httpx.stream("POST", server + "/v1/generate", json={**body, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    assert r.status_code == 200
    return events[-1], "".join(e.get("text", "") for e in events[:-1])


@pytest.mark.parametrize("fields, text, ids, finish", [
    pytest.param(dict(stop_token_ids=[tid("f")]), "de", "de", "stop", id="stop-token"),
    pytest.param(dict(stop_token_ids=[tid("f")], include_stop_str_in_output=True), "def", "def", "stop",
                 id="stop-token-included"),
    pytest.param(dict(stop=["fg"]), "de", "defg", "stop", id="stop-string"),
    pytest.param(dict(stop=["fg"], include_stop_str_in_output=True), "defg", "defg", "stop", id="stop-string-included"),
    pytest.param(dict(stop=["e"], min_tokens=3), "defghijk", "defghijk", "length", id="stop-string-before-min"),
    pytest.param(dict(stop=["e"], min_tokens=1), "d", "de", "stop", id="stop-string-after-min"),
    pytest.param(dict(stop=["fg"], min_tokens=3), "de", "defg", "stop", id="stop-string-spanning-min"),
    pytest.param(dict(stop_token_ids=[tid("e")], min_tokens=3), "dfghijkl", "dfghijkl", "length",
                 id="stop-token-masked-before-min"),
])
@pytest.mark.parametrize("stream", [pytest.param(False, id="json"), pytest.param(True, id="sse")])
def test_generate_stops_as_vllm_does(server, fields, text, ids, finish, stream):
    """A stop token ends the text without its own (counted in usage); a stop string cuts
    the text where it starts; include_stop_str_in_output keeps either; before min_tokens
    neither ends it (a stop string must end after min_tokens' token). Streamed, the pieces
    add up to the final text."""
    final, streamed = _generate(server, stream, **fields)
    assert (final["text"], final["finish_reason"]) == (text, finish), final
    assert final["token_ids"] == [tid(c) for c in ids if c in text or not fields.get("stop_token_ids")][:len(final["token_ids"])]
    assert final["usage"]["completion_tokens"] == len(ids) + (fields.get("stop_token_ids") is not None
                                                              and not fields.get("include_stop_str_in_output")
                                                              and finish == "stop")
    if stream:
        assert streamed == text


@pytest.mark.parametrize("fields, message", [
    pytest.param(dict(min_tokens=9), "min_tokens: at most max_new_tokens (8)", id="min-over-max"),
    pytest.param(dict(stop_token_ids=[96]), "stop_token_ids: token ids must be in [0, 96)", id="stop-id-range"),
    pytest.param(dict(repetition_penalty=0), "repetition_penalty", id="repetition-0"),
    pytest.param(dict(min_p=1.5), "min_p", id="min_p-over-1"),
    pytest.param(dict(stop_token_ids=[True]), "stop_token_ids", id="stop-id-bool"),
])
def test_generate_refuses_bad_values_naming_the_field(server, fields, message):
    r = httpx.post(server + "/v1/generate", json={"prompt": "abc", "max_new_tokens": 8, **fields})
    assert 400 <= r.status_code < 500 and message in error_message(r), r.text


def test_openai_routes_honour_vllm_extensions(client, server):
    """vLLM-targeted clients' extra_body: stop_token_ids, include_stop_str_in_output,
    min_tokens, repetition_penalty and min_p are honoured (each was a 400 'not implemented')."""
    args = dict(model="lfm2", prompt="abc", max_tokens=8, temperature=0)
    got = client.completions.create(**args, extra_body=dict(stop_token_ids=[tid("f")]))
    assert (got.choices[0].text, got.choices[0].finish_reason, got.usage.completion_tokens) == ("de", "stop", 3)
    got = client.completions.create(**args, stop=["fg"], extra_body=dict(include_stop_str_in_output=True))
    assert got.choices[0].text == "defg"
    got = client.completions.create(**args, stop=["e"], extra_body=dict(min_tokens=3, repetition_penalty=1.05,
                                                                         min_p=0.15))
    assert (got.choices[0].text, got.choices[0].finish_reason) == ("defghijk", "length")
    first = tid(openai_fake_server._fake_answer(CHAT, 1)[0])     # the chat answer's first token stops it
    chat = client.chat.completions.create(model="lfm2", messages=CHAT, max_tokens=4, temperature=0,
                                          extra_body=dict(stop_token_ids=[first]))
    assert (chat.choices[0].message.content, chat.choices[0].finish_reason) == ("", "stop")
    r = httpx.post(server + "/v1/completions", json={**args, "min_tokens": 9})
    assert r.status_code == 400 and "min_tokens: at most max_tokens (8)" in error_message(r), r.text
    r = httpx.post(server + "/v1/completions", json={**args, "max_tokens": 0, "echo": True, "min_tokens": 2})
    assert r.status_code == 400 and "min_tokens: at most max_tokens (0), got 2" in error_message(r), r.text


def test_triton_generate_takes_vllm_sampling_parameters(server):
    """Triton's vLLM backend form: the sampling parameters as a JSON string."""
    params = json.dumps({"max_tokens": 8, "stop_token_ids": [tid("f")], "include_stop_str_in_output": True,
                         "repetition_penalty": 1.1, "min_p": 0.05})
    r = httpx.post(server + "/v2/models/lfm2/generate", json={"text_input": "abc", "sampling_parameters": params})
    assert r.status_code == 200, r.text
    assert (r.json()["text_output"], r.json()["finish_reason"]) == ("def", "stop")
    r = httpx.post(server + "/v2/models/lfm2/generate",
                   json={"text_input": "abc", "parameters": {"max_tokens": 8, "stop": "e", "min_tokens": 3}})
    assert r.status_code == 200 and r.json()["text_output"] == "defghijk", r.text


def test_repetition_penalty_and_min_p_reach_the_model():
    """The real lfm2-demo through /v1/generate: greedy with a repetition penalty, and sampled
    with min_p and a seed, give the tokens LFM2ForCausalLM.generate gives for the same ids."""
    from inprocess_app import real_lm_client

    with real_lm_client(max_sequence_length=256, max_new_tokens=16) as http:
        lm = http.app.state.service.runtimes["lfm2"].served.lm
        ids = lm.tokenizer.encode("the the the the the")
        cases = [dict(repetition_penalty=1.8), dict(temperature=0.8, seed=3, min_p=0.2, repetition_penalty=1.2)]
        for fields in cases:
            r = http.post("/v1/generate", json={"input_ids": ids, "max_new_tokens": 12, "ignore_eos": True, **fields})
            assert r.status_code == 200, r.text
            (want,) = lm.generate([ids], max_new_tokens=12, **fields)
            assert r.json()["token_ids"] == want, fields
        plain = http.post("/v1/generate", json={"input_ids": ids, "max_new_tokens": 12, "ignore_eos": True})
        assert plain.json()["token_ids"] != lm.generate([ids], max_new_tokens=12, repetition_penalty=1.8)[0]


class _SplitTokenizer(FakeTokenizer):
    """FakeTokenizer, but "d" and "e" are the two UTF-8 bytes of "é", as a byte-level tokenizer
    spells it: FakeLM answers "ab" with "c", "\\xc3" (U+FFFD alone), "\\xa9" ("é"), "f", ..."""
    BYTES = {tid("d"): b"\xc3", tid("e"): b"\xa9"}

    def decode(self, ids) -> str:
        return b"".join(self.BYTES.get(i, bytes([32 + i])) for i in ids if i != self.eos_token_id).decode(
            "utf-8", errors="replace")


@pytest.fixture(scope="module")
def split_client():
    models = fake_models()
    models["lfm2"].lm.tokenizer = _SplitTokenizer(96)
    with TestClient(create_app(Settings(warmup=False), models=models, hooks=fake_hooks())) as http:
        yield client_ready(http)


@pytest.mark.parametrize("fields, text, finish", [
    pytest.param(dict(stop=["é"], min_tokens=3), "c", "stop", id="min-tokens-token-completes-the-stop"),
    pytest.param(dict(stop=["é"], min_tokens=4), "céfgh", "length", id="stop-before-min-tokens-token"),
    pytest.param(dict(stop=["cé"]), "", "stop", id="stop-ends-in-the-incomplete-character"),
])
@pytest.mark.parametrize("stream", [pytest.param(False, id="json"), pytest.param(True, id="sse")])
def test_stop_strings_at_a_character_split_over_tokens(split_client, fields, text, finish, stream):
    """"é" is two tokens, the first decoding to U+FFFD. min_tokens 3: the stop string "é" ends
    in the text of min_tokens' token, which completed the character, so it stops (the text
    before that token was counted with its U+FFFD, and "é" was looked for after it: never
    found). Streamed, a stop string's start just before an incomplete character is held back
    (the hold was counted from the U+FFFD: "c" went out, then "cé" cut the text to "")."""
    body = {"prompt": "ab", "max_new_tokens": 6, "stream": stream, **fields}
    if not stream:
        final, streamed = split_client.post("/v1/generate", json=body).json(), text
    else:
        with split_client.stream("POST", "/v1/generate", json=body) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        final, streamed = events[-1], "".join(e.get("text", "") for e in events[:-1])
    assert (final["text"], final["finish_reason"], streamed) == (text, finish, text), final
