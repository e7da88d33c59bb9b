"""/v1/completions as evaluation harnesses use it (lm-eval-harness's `local-completions`):
loglikelihood requests send batched prompts with `echo`, `logprobs` and `max_tokens: 1`, then
read each choice's `token_logprobs[ctxlen:-1]`, counting on one entry per prompt token and one
per generated token (OpenAI's legacy completions and vLLM give the end-of-sequence token one
too). A choice that ended on the end-of-sequence token had none, so the slice dropped the
last continuation token and scored the wrong span. Against the fake models (eos made 'H':
FakeLM counts up one character per token, so a prompt ending 'EF' generates 'G', then eos)
and against a plain forward of the real lfm2-demo model."""
import json

import pytest

from inprocess_app import EOS, eos_fake_client, real_lm_client


@pytest.fixture(scope="module")
def fake():
    with eos_fake_client() as c:
        yield c


def _streamed_logprobs(client, body: dict) -> dict:
    """The stream's logprobs of choice 0, its chunks' lists joined."""
    joined = {"tokens": [], "token_logprobs": [], "text_offset": []}
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    for key in joined:
                        joined[key] += (choice["logprobs"] or {}).get(key, [])
    return joined


def test_the_eos_that_ended_a_completion_has_its_logprobs_entry(fake):
    body = {"prompt": "EF", "max_tokens": 8, "temperature": 0, "logprobs": 1}
    r = fake.post("/v1/completions", json=body).json()
    choice, usage = r["choices"][0], r["usage"]
    assert (choice["text"], choice["finish_reason"], usage["completion_tokens"]) == ("G", "stop", 2)
    lp = choice["logprobs"]
    assert lp["tokens"] == ["G", f"token_id:{EOS}"] and lp["token_logprobs"] == [-0.5, -0.5], lp
    assert lp["text_offset"] == [0, 1]          # the eos has no text: it starts where the text ends
    streamed = _streamed_logprobs(fake, body)
    assert streamed == {k: lp[k] for k in streamed}
    # max_tokens 1 ending on eos (lm-eval's request, without the echo FakeLM cannot score)
    lp = fake.post("/v1/completions", json={**body, "prompt": "F", "max_tokens": 1}).json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["G"]      # the limit came first: no eos generated
    lp = fake.post("/v1/completions", json={**body, "prompt": "G", "max_tokens": 1}).json()["choices"][0]["logprobs"]
    assert lp["tokens"] == [f"token_id:{EOS}"] and lp["text_offset"] == [0]
    # a stop string's tokens stay without entries (they are no part of the reply)
    lp = fake.post("/v1/completions", json={**body, "prompt": "AB", "stop": ["E"]}).json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["C", "D"]


@pytest.fixture(scope="module")
def real():
    with real_lm_client(max_sequence_length=128, max_new_tokens=8) as client:
        yield client


def test_lm_eval_loglikelihood_slice_scores_the_continuation(real):
    """lm-eval's request for a batch of (context, continuation) token ids, and its parse:
    sum(token_logprobs[ctxlen:-1]) is the continuation's log-likelihood under a plain forward,
    whichever token the one generated step drew (here forced to eos by logit_bias)."""
    import torch
    lm = real.app.state.service.runtimes["lfm2"].served.lm
    eos = lm.tokenizer.eos_token_id
    pairs = [(list(b"The cat sat on"), list(b" the mat")), (list(b"1, 2, 3,"), list(b" 4"))]
    prompts = [ctx + cont for ctx, cont in pairs]
    for bias in ({str(eos): 100}, None):   # eos drawn, then whatever the seed draws
        body = {"model": "lfm2", "prompt": prompts, "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": True}
        r = real.post("/v1/completions", json={**body, "logit_bias": bias} if bias else body)
        assert r.status_code == 200, r.text
        for choice, (ctx, cont), ids in zip(r.json()["choices"], pairs, prompts, strict=True):
            lp = choice["logprobs"]
            assert len(lp["token_logprobs"]) == len(ids) + 1, (bias, lp["tokens"])
            with torch.inference_mode():
                forward = torch.log_softmax(lm(torch.tensor([ids])).float(), -1)[0]    # (L, V)
            want = [forward[i - 1, ids[i]].item() for i in range(len(ctx), len(ids))]
            assert lp["token_logprobs"][len(ctx):-1] == pytest.approx(want, abs=1e-4)
            if bias:   # the generated eos's own entry: its log-probability under the model
                assert choice["finish_reason"] == "stop" and choice["text"] == bytes(ids).decode()
                assert lp["token_logprobs"][-1] == pytest.approx(forward[-1, eos].item(), abs=1e-4)


def test_text_offsets_index_the_returned_text(real):
    """Each token's text_offset is where its text starts in the choice's text: the characters
    the tokens before it completed (vLLM's count), so a character split over byte tokens is
    counted once, by the token that completes it. Counted per token (each byte of `é` one
    U+FFFD), every offset after a non-ASCII character drifted right, past the text's end."""
    prompt = "héllo wörld, 日本 €5 ok"
    for body in ({"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 0},
                 {"prompt": prompt, "max_tokens": 4, "echo": True, "logprobs": 0, "temperature": 0,
                  "ignore_eos": True}):
        choice = real.post("/v1/completions", json=body).json()["choices"][0]
        lp, text = choice["logprobs"], choice["text"]
        ids = [257] + list(prompt.encode())              # the byte tokenizer's bos, then the bytes
        want = [len(bytes(ids[1:i]).decode("utf-8", errors="ignore")) for i in range(1, len(ids))]
        assert lp["text_offset"][:len(ids)] == [0] + want, lp["text_offset"]
        assert lp["text_offset"][len(ids):len(ids) + 1] in ([], [len(prompt)])   # the completion starts after it
        assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][-1] <= len(text)
        streamed = _streamed_logprobs(real, body)
        assert streamed["text_offset"] == lp["text_offset"] and streamed["tokens"] == lp["tokens"]


def test_a_prompt_that_fills_the_context_is_scored_without_generating(real):
    """echo + max_tokens 0 generates nothing, so a prompt of the whole context (128 tokens
    here) is scored; it was a 400 'prompt (128 tokens) + max_tokens (1) exceeds 128 tokens',
    naming a max_tokens the client never sent. One token more is a 400 naming the limit."""
    ids = list(range(40, 40 + 128))
    body = {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 0}
    r = real.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"][0]["logprobs"]["tokens"]) == 128 and r.json()["usage"]["prompt_tokens"] == 128
    r = real.post("/v1/completions", json={**body, "prompt": ids + [40]})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "prompt (129 tokens) exceeds 128 tokens" in message and "max_tokens" not in message
