"""Structured outputs through the service, on the seeded lfm2-demo model: OpenAI's
response_format (json_object, json_schema) on chat and completions, vLLM's structured_outputs
(also /v1/generate) and guided_* fields; every reply checked by independent means (json.loads
and the schema's rules, re.fullmatch, the choice list), streamed too; each bad constraint a
400 naming it, the server up after it."""
import json
import re

import pytest

pytest.importorskip("llguidance")

from error_bodies import error_message  # noqa: E402
from inprocess_app import real_lm_client  # noqa: E402
from test_structured_outputs import SCHEMA, _matches_schema  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=512, max_new_tokens=96) as client:
        yield client


def _post(client, path, **body):
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_generate_with_a_json_schema(client):
    r = _post(client, "/v1/generate", prompt="a person:", max_new_tokens=96, temperature=0.8, seed=4,
              structured_outputs={"json": SCHEMA})
    assert r["finish_reason"] == "stop" and _matches_schema(json.loads(r["text"])), r["text"]


def test_chat_response_format_json_schema_with_n_choices(client):
    """OpenAI's strict json_schema, as LangChain's with_structured_output sends it; each of
    the n sampled choices has its own place in the grammar."""
    r = _post(client, "/v1/chat/completions", messages=[{"role": "user", "content": "who?"}], n=3, temperature=1.0,
              seed=1, max_tokens=96, response_format={"type": "json_schema", "json_schema": {
                  "name": "person", "strict": True, "schema": SCHEMA}})
    texts = [c["message"]["content"] for c in r["choices"]]
    assert len(set(texts)) > 1 and all(_matches_schema(json.loads(t)) for t in texts), texts
    assert {c["finish_reason"] for c in r["choices"]} == {"stop"}


def test_completions_guided_regex_and_choice(client):
    r = _post(client, "/v1/completions", prompt=["date:", "when?"], max_tokens=20, temperature=1.2, seed=2, n=2,
              guided_regex=r"20[0-9]{2}-(0[1-9]|1[0-2])")
    assert all(re.fullmatch(r"20[0-9]{2}-(0[1-9]|1[0-2])", c["text"]) for c in r["choices"]), r["choices"]
    choices = ["positive", "negative", "neutral"]
    r = _post(client, "/v1/completions", prompt="sentiment:", max_tokens=20, temperature=0, guided_choice=choices)
    assert r["choices"][0]["text"] in choices and r["choices"][0]["finish_reason"] == "stop"


def test_a_streamed_json_object_joins_to_the_reply(client):
    body = dict(messages=[{"role": "user", "content": "json please"}], max_tokens=96, temperature=0.5, seed=9,
                response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}})
    whole = _post(client, "/v1/chat/completions", **body)["choices"][0]["message"]["content"]
    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == whole and _matches_schema(json.loads(streamed))


def test_a_length_cut_says_length(client):
    """A structure not complete within max_tokens is cut there: finish_reason length (as OpenAI)."""
    r = _post(client, "/v1/completions", prompt="x", max_tokens=3, temperature=0, response_format={"type": "json_object"})
    assert r["choices"][0]["finish_reason"] == "length" and r["choices"][0]["text"].startswith("{")


@pytest.mark.parametrize("path, body, status, needle", [
    pytest.param("/v1/completions", {"guided_regex": "("}, 400, "unclosed group", id="bad-regex"),
    pytest.param("/v1/completions", {"guided_grammar": "start: nope"}, 400, "nope", id="bad-grammar"),
    pytest.param("/v1/completions", {"guided_regex": "a", "guided_choice": ["b"]}, 400,
                 "guided_regex, guided_choice: give one", id="two-forms"),
    pytest.param("/v1/chat/completions", {"response_format": {"type": "xml"}}, 400,
                 "response_format: expected type text, json_object or json_schema", id="unknown-format"),
    pytest.param("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                 400, "json_schema expects", id="schema-missing"),
    # OpenAI's shape, as OpenAI and vLLM hold it: json_schema's name required, no unknown fields
    pytest.param("/v1/chat/completions", {"response_format": {"type": "json_schema",
                                                              "json_schema": {"schema": {"type": "object"}}}},
                 400, "json_schema expects {\"name\"", id="name-missing"),
    pytest.param("/v1/chat/completions", {"response_format": {"type": "text", "foo": 1}}, 400,
                 "response_format: unknown field(s) ['foo'] for type 'text'", id="unknown-field"),
    pytest.param("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}, "stict": True}}}, 400,
                 "unknown json_schema field(s) ['stict']", id="unknown-json-schema-field"),
    pytest.param("/v1/generate", {"structured_outputs": {"regex": "a", "choice": ["b"]}}, 422,
                 "expected exactly one of", id="two-kinds"),
    pytest.param("/v1/generate", {"structured_outputs": {"json": "{oops"}}, 400, "json: expected a JSON schema",
                 id="schema-text-not-json"),
    pytest.param("/v1/completions", {"guided_choice": []}, 400, "guided_choice", id="no-choices"),
])
def test_bad_constraints_are_4xx_naming_them(client, path, body, status, needle):
    base = {"messages": [{"role": "user", "content": "x"}]} if "chat" in path else \
        {"prompt": "x"} if "completions" in path else {"prompt": "x"}
    r = client.post(path, json={**base, "max_tokens" if path != "/v1/generate" else "max_new_tokens": 4, **body})
    assert r.status_code == status and needle in error_message(r), r.text
    assert client.get("/v2/health/ready").status_code == 200


def test_a_lone_surrogate_in_a_constraint_is_a_422(client):
    """JSON's escapes can carry half a surrogate pair, which no grammar engine can read."""
    r = client.post("/v1/generate", content=b'{"prompt": "x", "structured_outputs": {"regex": "a\\ud800"}}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "lone UTF-16 surrogate" in error_message(r), r.text


def test_a_constraint_is_compiled_once_for_all_its_prompts_and_choices(client, monkeypatch):
    """Compiling a grammar runs on the event loop (a large schema: ~0.1-0.2 s) and was done
    once per choice, so a batch of prompts x n froze every other request for prompts x n
    compiles (64 x 8 of them before the 400 for too many sequences). Each distinct constraint
    of a request is compiled once and each choice gets its own copy of the compiled matcher:
    its own place in the grammar. Not kept for the next request (see the next test)."""
    from models.lfm2 import structured
    compiled = []
    real = structured.grammar_for
    monkeypatch.setattr(structured, "grammar_for", lambda kind, value: compiled.append(kind) or real(kind, value))
    body = dict(prompt=["a:", "bb:", "c:"], n=3, max_tokens=12, temperature=1.3, seed=8,
                guided_regex=r"[a-e]{2,6}-(once|twice)")
    for _ in range(2):
        r = _post(client, "/v1/completions", **body)
        texts = [c["text"] for c in r["choices"]]
        assert len(texts) == 9 and all(re.fullmatch(body["guided_regex"], t) for t in texts), texts
        assert len(set(texts)) > 1
    assert compiled == ["regex"] * 2
    r = client.post("/v1/completions", json={**body, "prompt": ["a"] * 64, "n": 8})   # 512 sequences: never admitted
    assert r.status_code == 400 and "x n (8): 512 sequences" in error_message(r), r.text
    assert compiled == ["regex"] * 3


@pytest.mark.parametrize("path, body", [
    pytest.param("/v1/generate", '{"prompt": "x", "structured_outputs": {"json": "' + "[" * 100_000 + '"}}',
                 id="schema-text-nested"),
    pytest.param("/v1/completions", '{"prompt": "x", "guided_json": "' + '{\\"items\\": ' * 20_000 + '"}',
                 id="guided-json-text-nested"),
    pytest.param("/v1/completions", '{"prompt": "x", "guided_json": ' + '{"items": ' * 950 + "{}" + "}" * 951,
                 id="guided-json-object-nested"),
])
def test_a_schema_nested_too_deeply_is_a_400(client, path, body):
    """A schema nested deeper than Python's json module goes (as JSON text, or as an object
    just under the body parser's ~900 levels) was a 500 RecursionError."""
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and ("nests too deeply" in error_message(r) or "recursion limit" in error_message(r)), \
        r.text[:300]
    assert client.get("/v2/health/ready").status_code == 200


def test_a_constraint_compiled_for_one_request_is_not_shared_with_the_next(client):
    """Copies of a compiled constraint share llguidance's lexer and its limits: 4c1fd74 kept
    them for later requests, so once a request exhausted a regex's lexer ('too many expressions
    constructed' after its first 'a'), every later request with it failed at once (its first
    mask allowed only eos: an empty text). A request's output does not depend on earlier ones."""
    body = {"prompt": "x", "max_new_tokens": 4, "temperature": 0, "structured_outputs": {"regex": "(a?){5000}a{5000}"}}
    first = client.post("/v1/generate", json=body)
    second = client.post("/v1/generate", json=body)
    assert (second.status_code, second.json().get("token_ids")) == (first.status_code, first.json().get("token_ids"))
    assert first.status_code != 200 or first.json()["token_ids"][:1] == [ord("a")], first.text


def test_streamed_events_name_every_token_their_text_completes(client):
    """One token a byte: a character of 2-4 bytes is one event naming all its tokens (token_ids,
    token_id the last); joined, the events' ids are the reply's and their text its text."""
    word = "\u00e9\u2192\U0001f600 ok"       # 2-, 3- and 4-byte characters (é, →, 😀), then ASCII
    r = client.post("/v1/generate", json={"prompt": "x", "max_new_tokens": 16, "temperature": 0, "stream": True,
                                          "structured_outputs": {"choice": [word]}})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    pieces, final = [e for e in events if not e.get("done")], events[-1]
    assert final["done"] and final["text"] == word and final["token_ids"] == list(word.encode()), final
    assert [t for e in pieces for t in e["token_ids"]] == final["token_ids"]
    assert "".join(e["text"] for e in pieces) == word
    assert [len(e["token_ids"]) for e in pieces[:3]] == [2, 3, 4]   # each multi-byte character, whole
    assert all(e["token_id"] == e["token_ids"][-1] for e in pieces if e["token_ids"])


def test_a_constraint_the_engine_gives_up_on_mid_output_is_an_error_not_a_stop(client):
    """llguidance compiles a{5000} lazily and stops at its lexer's limit once the first 'a' is
    taken ('too many expressions constructed'); the sequence then ended with finish_reason
    "stop" and the text "a", which the regex does not match, as if complete. It is a 400
    (in-band in a stream) naming the engine's reason; the server serves on."""
    body = {"prompt": "x", "max_new_tokens": 8, "temperature": 0, "structured_outputs": {"regex": "(a?){5000}a{5000}"}}
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 400 and "too many expressions constructed" in error_message(r), r.text
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 8, "stream": True,
                                             "guided_regex": "(a?){5000}a{5000}"})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "too many expressions constructed" in events[-1]["error"]["message"], r.text
    assert not any(c.get("finish_reason") == "stop" for e in events for c in e.get("choices", []))
    assert _post(client, "/v1/generate", **{**body, "structured_outputs": {"regex": "a{3}"}})["text"] == "aaa"


@pytest.mark.parametrize("path, body", [
    pytest.param("/v1/generate", {"prompt": "x", "max_new_tokens": 4, "structured_outputs": {"regex": "[a-z]+"}},
                 id="generate"),
    pytest.param("/v1/completions", {"prompt": ["x", "y"], "max_tokens": 4, "n": 2, "guided_regex": "[a-z]+"},
                 id="completions"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4,
                                          "response_format": {"type": "json_object"}}, id="chat"),
])
def test_grammars_compile_off_the_event_loop(client, monkeypatch, path, body):
    """Compiling a large schema takes ~0.1 s (a tokenizer's first, ~1 s): on the event loop it
    stalled every other request's stream meanwhile."""
    import asyncio

    from models.lfm2 import structured
    on_loop = []
    real = structured.TokenConstraint.__init__

    def recording(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:   # no loop running in this thread: a worker
            on_loop.append(False)
        real(self, *args, **kwargs)
    monkeypatch.setattr(structured.TokenConstraint, "__init__", recording)
    _post(client, path, **body)
    assert on_loop and not any(on_loop), on_loop


def test_triton_generate_takes_structured_outputs(client):
    """Triton's generate extension, as its vLLM backend takes SamplingParams: structured_outputs
    in parameters or in the sampling_parameters JSON string."""
    body = {"text_input": "a person:", "parameters": {"max_tokens": 96, "temperature": 0.9, "seed": 6,
                                                      "structured_outputs": {"json": SCHEMA}}}
    r = _post(client, "/v2/models/lfm2/generate", **body)
    assert r["finish_reason"] == "stop" and _matches_schema(json.loads(r["text_output"])), r
    sampling = json.dumps({"max_tokens": 8, "structured_outputs": {"choice": ["up", "down"]}})
    r = _post(client, "/v2/models/lfm2/generate", text_input="x", sampling_parameters=sampling)
    assert r["text_output"] in ("up", "down") and r["finish_reason"] == "stop", r


def test_the_slow_first_mask_is_built_before_the_request_queues(client, monkeypatch):
    """A grammar whose first mask takes ~0.1 s (a{100000}: llguidance builds its lexer
    states) built them in the engine's step, where every live sequence waited on it. Now the
    first mask of a compiled grammar is built where it compiles (a worker thread), and the
    engine's calls are each copy's, on lexer states already built."""
    import threading

    from models.lfm2.structured import TokenConstraint
    calls = []
    original = TokenConstraint.allowed

    def recording(self, device):
        calls.append((id(self.matcher), threading.current_thread().name))
        return original(self, device)

    monkeypatch.setattr(TokenConstraint, "allowed", recording)
    r = _post(client, "/v1/generate", prompt="a", max_new_tokens=4, temperature=0, structured_outputs={"regex": "a{100000}"})
    assert r["text"] == "aaaa" and r["finish_reason"] == "length"
    first_matcher, first_thread = calls[0]
    engine = {m for m, t in calls if t.startswith("dwserve-compute")}      # the thread that runs steps
    assert first_thread == "dwserve-grammar"   # the compile's own thread (a deep stack), off the event loop
    assert engine and first_matcher not in engine                          # the engine's: the copy's
