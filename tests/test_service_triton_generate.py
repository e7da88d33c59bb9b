"""Triton's generate extension (service/routes_v2_generate.py) in-process on the real
lfm2-demo model: /generate and /generate_stream give the tokens /v1/generate gives for the
same request (an independent route over the same handler), TRT-LLM's top-level parameters
mean what `parameters` means, errors are 4xx naming the field, and the requests are metered."""
import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from server_process import client_ready
from inprocess_app import real_lm_client
from error_bodies import error_message


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=12) as client:
        yield client


def _v1(client, **body) -> dict:
    r = client.post("/v1/generate", json={"ignore_eos": True, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _events(client, path, body) -> tuple[list[str], list[dict]]:
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    return lines, [json.loads(line[len("data: "):]) for line in lines]


@pytest.mark.parametrize("sampling", [pytest.param({}, id="greedy"),
                                      pytest.param({"temperature": 0.8, "top_p": 0.9, "seed": 11}, id="sampled")])
def test_generate_gives_what_v1_generate_gives(client, sampling):
    want = _v1(client, prompt="depthwise", max_new_tokens=7, **sampling)
    r = client.post("/v2/models/lfm2/generate",
                    json={"id": "r1", "text_input": "depthwise",
                          "parameters": {"max_tokens": 7, "ignore_eos": True, **sampling}})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["text_output"] == want["text"] and got["usage"] == want["usage"]
    assert (got["model_name"], got["model_version"], got["id"]) == ("lfm2", "1", "r1")
    assert got["finish_reason"] == "length" and got["usage"]["completion_tokens"] == 7
    assert got["parameters"]["depthwise_impl"] == "auto" and r.headers["x-depthwise-impl"] == "auto"
    plain = client.post("/v2/models/lfm2/generate", json={"text_input": "x", "max_tokens": 1}).json()
    assert "id" not in plain and plain["text_output"] is not None


def test_top_level_parameters_as_trt_llm_sends_them(client):
    """{"text_input", "max_tokens", "bad_words": "", "stop_words": "", ...}: TRT-LLM's ensemble
    request, the same generation as the `parameters` form and as /v1/generate."""
    want = _v1(client, prompt="abc", max_new_tokens=5, temperature=0.5, seed=3, top_k=20)
    top = client.post("/v2/models/lfm2/versions/1/generate",
                      json={"text_input": "abc", "max_tokens": 5, "bad_words": "", "stop_words": "",
                            "temperature": 0.5, "random_seed": 3, "top_k": 20, "ignore_eos": True,
                            "stream": False}).json()
    assert top["text_output"] == want["text"]
    # top_k 0 is TRT-LLM's "off": the same as leaving it out
    off = client.post("/v2/models/lfm2/generate", json={"text_input": "abc", "max_tokens": 5, "top_k": 0,
                                                        "temperature": 0.5, "seed": 3, "ignore_eos": True}).json()
    assert off["text_output"] == _v1(client, prompt="abc", max_new_tokens=5, temperature=0.5, seed=3)["text"]


def test_a_stop_word_ends_the_text_like_v1_stop(client):
    free = _v1(client, prompt="q", max_new_tokens=12)["text"]
    stop = free[3:5] if len(free) >= 5 else free[-1:]
    want = _v1(client, prompt="q", max_new_tokens=12, stop=[stop])
    got = client.post("/v2/models/lfm2/generate", json={"text_input": "q", "max_tokens": 12,
                                                        "stop_words": [stop], "ignore_eos": True}).json()
    assert got["text_output"] == want["text"] and got["finish_reason"] == want["finish_reason"] == "stop"


def test_generate_stream_is_one_event_per_token_and_no_done_line(client):
    body = {"text_input": "stream me", "parameters": {"max_tokens": 6, "ignore_eos": True}}
    whole = client.post("/v2/models/lfm2/generate", json=body).json()
    lines, events = _events(client, "/v2/models/lfm2/generate_stream", body)
    assert not any("[DONE]" in line for line in lines)
    tokens, final = events[:-1], events[-1]
    assert len(tokens) >= 1 and all(set(e) == {"model_name", "model_version", "text_output"} for e in tokens)
    assert "".join(e["text_output"] for e in tokens) == whole["text_output"]
    assert final["text_output"] == "" and final["finish_reason"] == "length"
    assert final["usage"] == whole["usage"] and final["usage"]["completion_tokens"] == 6



@pytest.mark.parametrize("form", [pytest.param("string", id="json-string"), pytest.param("object", id="object")])
def test_vllm_backend_request_form(client, form):
    """Triton's vLLM backend takes `sampling_parameters` as one JSON string, top_k -1 as off and
    `exclude_input_in_output` (its default false puts the prompt first): clients written for it
    (genai-perf, its examples) get the same generation as /v1/generate."""
    sampling = {"max_tokens": 5, "temperature": 0.7, "top_k": -1, "seed": 4, "ignore_eos": True}
    want = _v1(client, prompt="vllm", max_new_tokens=5, temperature=0.7, seed=4)["text"]
    body = {"text_input": "vllm", "stream": False,
            "sampling_parameters": json.dumps(sampling) if form == "string" else sampling}
    excluded = client.post("/v2/models/lfm2/generate", json={**body, "exclude_input_in_output": True})
    assert excluded.status_code == 200, excluded.text
    assert excluded.json()["text_output"] == want
    included = client.post("/v2/models/lfm2/generate", json={**body, "exclude_input_in_output": False}).json()
    assert included["text_output"] == "vllm" + want
    _, events = _events(client, "/v2/models/lfm2/generate_stream", {**body, "exclude_input_in_output": False})
    assert events[0]["text_output"].startswith("vllm") and events[-1]["text_output"] == ""
    assert "".join(e["text_output"] for e in events) == "vllm" + want
    assert client.post("/v2/models/lfm2/generate", json=body).json()["text_output"] == want   # default: excluded

@pytest.mark.parametrize("path, body, status, needle", [
    pytest.param("/v2/models/nope/generate", {"text_input": "x"}, 404, "expected one of", id="unknown-model"),
    pytest.param("/v2/models/lfm2/versions/2/generate", {"text_input": "x"}, 404, "version", id="version"),
    pytest.param("/v2/models/lfm2/generate", {"parameters": {"max_tokens": 2}}, 400, "text_input", id="no-text"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "max_tokens": 3, "parameters": {"max_tokens": 4}},
                 400, "set twice", id="clash"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "bad_words": ["  "]}, 400, "bad_words: expected non-blank",
                 id="bad-words-blank"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "stop": "a", "stop_words": "b"}, 400, "stop_words",
                 id="two-stops"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "parameters": {"beam_width": 2}}, 400, "beam_width",
                 id="unknown-parameter"),
    pytest.param("/v2/models/lfm2/generate_stream", {"text_input": "x", "max_tokens": 99}, 400, "max_new_tokens",
                 id="over-limit"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "depthwise_impl": "fast"}, 400, "depthwise_impl",
                 id="unknown-impl"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "sampling_parameters": "{max_tokens: 2"}, 400,
                 "sampling_parameters", id="sampling-parameters-not-json"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "sampling_parameters": "[2]"}, 400,
                 "sampling_parameters", id="sampling-parameters-not-object"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "sampling_parameters": '{"n": 2}'}, 400,
                 "sampling_parameters: n", id="sampling-parameters-unknown"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "max_tokens": 3,
                                              "sampling_parameters": '{"max_tokens": 4}'}, 400,
                 "sampling_parameters", id="sampling-parameters-clash"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "x", "top_k": -2}, 400, "top_k", id="top-k-below-off"),
])
def test_bad_requests_are_4xx_naming_the_field(client, path, body, status, needle):
    r = client.post(path, json=body)
    assert r.status_code == status and needle in error_message(r), r.text
    assert client.get("/v2/health/ready").status_code == 200


def test_a_body_not_labelled_json_is_read_as_json_and_garbage_is_a_400(client):
    """Triton's own example posts with `curl -d`, which says application/x-www-form-urlencoded."""
    body = b'{"text_input": "abc", "max_tokens": 3, "ignore_eos": true}'
    r = client.post("/v2/models/lfm2/generate", content=body,
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.json()["text_output"] == _v1(client, prompt="abc", max_new_tokens=3)["text"]
    for junk in (b"", b"text_input=abc", b"[1]", b'{"text_input": 5}'):
        r = client.post("/v2/models/lfm2/generate_stream", content=junk)
        assert r.status_code == 400 and "invalid generate request" in error_message(r), junk


def test_requests_are_metered_and_the_extension_announced(client):
    before = client.get("/metrics").text
    client.post("/v2/models/lfm2/generate", json={"text_input": "m", "max_tokens": 2})
    after = client.get("/metrics").text

    def count(text):
        line = next((x for x in text.splitlines()
                     if x.startswith('dwserve_requests_total{impl="auto",model="lfm2",status="200"}')), None)
        return float(line.split()[-1]) if line else 0.0

    assert count(after) == count(before) + 1
    assert "generate" in client.get("/v2").json()["extensions"]


def test_a_model_that_does_not_generate_is_a_400():
    from service.testing import fake_hooks, fake_models
    app = create_app(Settings(warmup=False), models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as c:
        client_ready(c)
        r = c.post("/v2/models/mobilenet_v2/generate", json={"text_input": "x"})
        assert r.status_code == 400 and "does not generate text" in error_message(r)
        assert "'lfm2'" in error_message(r)


@pytest.mark.parametrize("path, status, needle", [
    pytest.param("/v2/models/nope/generate", 404, "unknown model 'nope'", id="unknown-model"),
    pytest.param("/v2/models/nope/generate_stream", 404, "unknown model 'nope'", id="unknown-model-stream"),
    pytest.param("/v2/models/lfm2/versions/9/generate", 404, "unknown model version '9'", id="unknown-version"),
    pytest.param("/v2/models/mobilenet_v2/generate", 400, "does not generate text", id="not-a-generator")])
def test_the_url_is_checked_before_the_body(path, status, needle):
    """As /infer: a client that named the wrong model (or version) is told so, whatever its
    body; it was told 'text_input: Field required' about a body in another server's form."""
    from service.testing import fake_hooks, fake_models
    app = create_app(Settings(warmup=False), models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as c:
        client_ready(c)
        r = c.post(path, json={"prompt": "x", "max_tokens": 2})   # an OpenAI body, not Triton's
        assert r.status_code == status and needle in error_message(r), r.text
