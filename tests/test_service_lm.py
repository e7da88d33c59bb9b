"""The language-model routes in-process on the real lfm2-demo model, each against an
independent computation: prefix caching (a repeated system prompt restored, the same answer,
usage and /metrics), logprobs (equal to a plain forward of prompt + tokens), and OpenAI's
penalties and logit_bias (equal to a loop that writes the formula out)."""
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from error_bodies import error_message
from server_process import client_ready
from inprocess_app import real_lm_client

SYSTEM = "You answer questions about depthwise convolutions in one short sentence. " * 3   # 219 bytes


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=512, max_new_tokens=8, prefix_cache_mib=64) as client:
        yield client


def _chat(client, question: str) -> dict:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 6, "temperature": 0,
                                                  "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_repeated_system_prompt_comes_from_the_prefix_cache(client):
    first = _chat(client, "what is k?")
    again = _chat(client, "what is k?")
    other = _chat(client, "and the stride?")
    cached = [r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in (first, again, other)]
    prompt = first["usage"]["prompt_tokens"]                      # bos + ChatML turns, one token per byte
    assert cached[0] == 0 and cached[1] == (prompt - 1) // 64 * 64
    assert cached[2] >= (1 + len("<|im_start|>system\n") + len(SYSTEM)) // 64 * 64 >= 192
    assert again["choices"][0]["message"] == first["choices"][0]["message"]   # the same tokens, restored or not
    plain = client.post("/v1/generate", json={"prompt": "x" * 10, "max_new_tokens": 2}).json()
    assert plain["usage"]["cached_tokens"] == 0
    metrics = client.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("dwserve_prefix_cached_tokens_total{"))
    assert float(line.split()[-1]) == cached[1] + cached[2]


def test_generate_logprobs_equal_the_models_own_distribution(client):
    """Through the service (continuous batch, chunked prefill): each generated token's logprob
    and top alternatives equal a plain forward of prompt + generated tokens."""
    import torch
    prompt = list(range(40, 90))
    r = client.post("/v1/generate", json={"input_ids": prompt, "max_new_tokens": 6, "temperature": 0.7,
                                          "seed": 3, "logprobs": 3, "ignore_eos": True}).json()
    ids = r["token_ids"]
    assert len(r["logprobs"]) == len(ids) == 6
    lm = client.app.state.service.runtimes["lfm2"].served.lm
    with torch.inference_mode():
        lp = torch.log_softmax(lm(torch.tensor([prompt + ids])).float(), -1)[0]
    for i, (tok, got) in enumerate(zip(ids, r["logprobs"])):
        want = lp[len(prompt) - 1 + i]
        assert got["token_id"] == tok and abs(got["logprob"] - want[tok].item()) < 1e-4
        top_v, top_i = want.topk(3)
        assert [t["token_id"] for t in got["top"]] == top_i.tolist()
        assert [t["logprob"] for t in got["top"]] == pytest.approx(top_v.tolist(), abs=1e-4)


def _byte_token_name(i: int) -> str:
    """lfm2-demo's byte tokens as OpenAI names them: ASCII as itself, a byte of a longer
    character `bytes:\\xNN`, a special id (>= 256) by its name (tests/test_openai_token_names.py)."""
    from models.lfm2.presets import PRESETS
    from models.lfm2.tokenizer import ByteTokenizer
    return ByteTokenizer(PRESETS["lfm2-demo"]).special_token_name(i) if i >= 256 \
        else chr(i) if i < 128 else f"bytes:\\x{i:02x}"


def test_logprobs_name_byte_tokens_apart_and_give_their_bytes(client):
    """A byte of a multi-byte character decodes alone to U+FFFD: completions' top_logprobs
    (keyed by token) lost alternatives to that shared name, and chat's `bytes` were U+FFFD's
    instead of the token's, so joining them did not give the reply's text."""
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                                                  "temperature": 0.9, "seed": 7, "logprobs": True, "top_logprobs": 5,
                                                  "ignore_eos": True}).json()
    choice = r["choices"][0]
    content = choice["logprobs"]["content"]
    assert any(b >= 0x80 for c in content for b in c["bytes"]), "the seed must give a non-ASCII reply"
    assert bytes(b for c in content for b in c["bytes"]).decode("utf-8", "replace") == choice["message"]["content"]
    for c in content + [t for c in content for t in c["top_logprobs"]]:
        assert len(c["bytes"]) <= 1 and (c["token"] == _byte_token_name(c["bytes"][0]) if c["bytes"]
                                         else c["token"].startswith("<|"))   # a special: no bytes
    ids = client.post("/v1/generate", json={"prompt": "caf\u00e9 \u2713", "max_new_tokens": 4, "logprobs": 5,
                                            "temperature": 0, "ignore_eos": True}).json()["logprobs"]
    got = client.post("/v1/completions", json={"prompt": "caf\u00e9 \u2713", "max_tokens": 4, "logprobs": 5,
                                               "temperature": 0, "ignore_eos": True}).json()["choices"][0]["logprobs"]
    assert got["tokens"] == [_byte_token_name(t["token_id"]) for t in ids]
    assert got["top_logprobs"] == [{_byte_token_name(x["token_id"]): x["logprob"] for x in t["top"]} for t in ids]
    assert sum(k.startswith("bytes:") for d in got["top_logprobs"] for k in d) > 1   # what once collapsed


def test_echo_scores_the_prompt_with_the_models_own_distribution(client):
    """`echo` + `logprobs` + max_tokens 0, the loglikelihood request evaluation harnesses send:
    every prompt token after the first gets log p(token | tokens before), its top alternatives
    too, equal to one plain forward; with tokens generated, their entries follow the prompt's."""
    import torch
    prompt = list(range(60, 100))
    lm = client.app.state.service.runtimes["lfm2"].served.lm
    tok = lm.tokenizer
    with torch.inference_mode():
        lp = torch.log_softmax(lm(torch.tensor([prompt])).float(), -1)[0]        # (L, V)
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}).json()
    got = r["choices"][0]["logprobs"]
    assert r["choices"][0]["text"] == tok.decode(prompt) and r["usage"]["completion_tokens"] == 0
    assert got["tokens"] == [tok.decode([t]) for t in prompt]
    assert got["token_logprobs"][0] is None and got["top_logprobs"][0] is None
    want = [lp[i, prompt[i + 1]].item() for i in range(len(prompt) - 1)]
    assert got["token_logprobs"][1:] == pytest.approx(want, abs=1e-4)
    top_v, top_i = lp[:-1].topk(2, dim=-1)
    for i, (d, vals, idx) in enumerate(zip(got["top_logprobs"][1:], top_v.tolist(), top_i.tolist())):
        want_top = {_byte_token_name(j): v for j, v in zip(idx, vals)}
        want_top.setdefault(_byte_token_name(prompt[i + 1]), want[i])   # the token itself, always (OpenAI's spec)
        assert d.keys() == want_top.keys() and list(d.values()) == pytest.approx(list(want_top.values()), abs=1e-4)
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 3, "echo": True, "logprobs": 0,
                                             "temperature": 0, "ignore_eos": True}).json()
    both = r["choices"][0]["logprobs"]
    assert len(both["tokens"]) == len(prompt) + 3 and both["token_logprobs"][:len(prompt)] == got["token_logprobs"]
    assert both["text_offset"][len(prompt)] == len(tok.decode(prompt))


def test_penalties_and_logit_bias_through_the_service(client):
    """The real model behind /v1/generate and the OpenAI routes: the adjusted greedy tokens
    are those of an independent loop (a forward per token, OpenAI's formula written out)."""
    import torch
    lm = client.app.state.service.runtimes["lfm2"].served.lm
    prompt = [72, 101, 108, 108, 111]
    r = client.post("/v1/generate", json={"input_ids": prompt, "max_new_tokens": 6, "frequency_penalty": 1.5,
                                          "presence_penalty": 0.5, "logit_bias": {"32": 2.0}, "ignore_eos": True})
    out = []
    for _ in range(6):
        with torch.inference_mode():
            logits = lm(torch.tensor([prompt + out])).float()[0, -1]
        logits = logits.clone()
        for j in set(out):
            logits[j] -= 0.5 + 1.5 * out.count(j)
        logits[32] += 2.0
        out.append(int(logits.argmax()))
    assert r.json()["token_ids"] == out
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                                     "temperature": 0, "logit_bias": {"65": 100}, "ignore_eos": True})
    assert chat.json()["choices"][0]["message"]["content"] == "AAAA"
    bad = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2, "logit_bias": {"99999": 1}})
    assert bad.status_code == 400 and "token ids must be in" in error_message(bad)
    assert client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2, "presence_penalty": 3}).status_code == 400


def test_generation_stops_at_every_eos_id_of_the_config():
    """A config's eos_token_id may be a list (transformers stops at any of them): the service
    stopped only at the first, generating past the others; ignore_eos still runs past all."""
    import dataclasses

    from models.registry import build_model
    served = build_model("lfm2", None, device="cpu", seed=0)
    lm = served.lm
    prompt = [72, 101, 108, 108, 111]
    greedy = lm.generate([prompt], max_new_tokens=6)[0]
    second = next(t for t in greedy[2:] if t not in greedy[:2])          # a later token, not earlier
    lm.config = dataclasses.replace(lm.config, eos_token_id=(lm.config.eos_token_ids[0], second))
    app = create_app(Settings(models=("lfm2",), max_new_tokens=8, warmup=False), models={"lfm2": served})
    with TestClient(app) as c:
        client_ready(c, timeout=120)
        r = c.post("/v1/generate", json={"input_ids": prompt, "max_new_tokens": 6, "temperature": 0}).json()
        assert r["token_ids"] == greedy[:greedy.index(second)] and r["finish_reason"] == "stop"
        r = c.post("/v1/generate", json={"input_ids": prompt, "max_new_tokens": 6, "temperature": 0,
                                         "ignore_eos": True}).json()
        assert r["token_ids"] == greedy and r["finish_reason"] == "length"


@pytest.mark.parametrize("length", [pytest.param(n, id=f"max_sequence_length={n}") for n in (1, 2, 4)])
def test_the_generation_warm_up_fits_any_sequence_length(length):
    """The scheduler's warm-up ran a 3-token prompt for 2 tokens whatever the sequence length:
    with --max-sequence-length below 5 (warm-up on, the default) the model never loaded
    ("prompt (3 tokens) + max_new_tokens (2) exceeds this batch's max_length 4"; at 1 the
    engine's own refusal), so the server never turned ready, /v2 infer included. Now it is
    ready; what fits is generated, and what cannot is the usual 400."""
    from models.registry import build_model

    lm = build_model("lfm2", None, device="cpu", seed=0)
    app = create_app(Settings(models=("lfm2",), warmup=True, max_sequence_length=length), models={"lfm2": lm})
    with TestClient(app) as client:
        client_ready(client, timeout=60)
        one = {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}]}
        assert client.post("/v2/models/lfm2/infer", json=one).status_code == 200
        r = client.post("/v1/generate", json={"input_ids": [5], "max_new_tokens": 1})
        if length == 1:
            assert r.status_code == 400 and "max_sequence_length" in error_message(r), r.text
        else:
            assert r.status_code == 200 and len(r.json()["token_ids"]) == 1, r.text
