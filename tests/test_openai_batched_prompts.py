"""OpenAI completions with a list of prompts (texts or token id lists), as the OpenAI API and
vLLM take them and evaluation harnesses send them: n choices per prompt, prompt i's at
indices i*n .. i*n+n-1, each what the prompt gets alone, usage summed over the prompts. The
real seeded lfm2-demo model; references are plain forwards of the model."""
import random

import pytest
import torch

from continuous_helpers import adjusted_greedy
from error_bodies import error_message
from inprocess_app import real_lm_client


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=8, max_prompts=4) as client:
        yield client


@pytest.fixture(scope="module")
def lm(client):
    return client.app.state.service.runtimes["lfm2"].served.lm


def _prompts(rng: random.Random, count: int) -> list[list[int]]:
    """Byte-token prompts of different lengths (ids below 256: lfm2-demo's byte tokens)."""
    return [[rng.randrange(32, 256) for _ in range(rng.randrange(3, 40))] for _ in range(count)]


def _complete(client, **body) -> dict:
    r = client.post("/v1/completions", json={"ignore_eos": True, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_each_prompt_of_a_batch_gets_the_greedy_tokens_of_a_plain_loop(client, lm):
    rng = random.Random(11)
    prompts = _prompts(rng, 3)
    reply = _complete(client, prompt=prompts, max_tokens=5, temperature=0)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    for prompt, choice in zip(prompts, reply["choices"]):
        assert choice["text"] == lm.tokenizer.decode(adjusted_greedy(lm, prompt, 5))
        assert choice["finish_reason"] == "length"
    assert reply["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)
    assert reply["usage"]["completion_tokens"] == 15
    assert reply["usage"]["total_tokens"] == sum(len(p) for p in prompts) + 15


def test_text_prompts_with_n_choices_each_get_what_they_get_alone(client):
    """n sampled choices per text prompt: choice j of prompt i (index i*n + j) is choice j of
    that prompt sent alone with the same seed (seed + j), not shifted by the prompts before it."""
    prompts = ["depthwise", "short conv \u00e9", "k"]
    body = dict(max_tokens=6, temperature=0.9, seed=5, n=2)
    batch = _complete(client, prompt=prompts, **body)
    assert [c["index"] for c in batch["choices"]] == list(range(6))
    alone = [_complete(client, prompt=p, **body) for p in prompts]
    assert [c["text"] for c in batch["choices"]] == [c["text"] for r in alone for c in r["choices"]]
    assert batch["usage"]["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in alone)   # once per prompt
    assert batch["usage"]["completion_tokens"] == 36   # 3 prompts x 2 choices x 6 tokens
    assert len({c["text"] for c in batch["choices"][:2]}) == 2, "seed + j: a prompt's two choices differ"


def test_echo_scores_every_prompt_of_a_batch(client, lm):
    """echo + logprobs + max_tokens 0 over a batch (a harness's loglikelihood batch): each
    choice is its prompt's text and log p(token | tokens before it) from a plain forward."""
    prompts = _prompts(random.Random(12), 3)
    reply = _complete(client, prompt=prompts, max_tokens=0, echo=True, logprobs=1)
    assert reply["usage"]["completion_tokens"] == 0
    for prompt, choice in zip(prompts, reply["choices"]):
        with torch.inference_mode():
            lp = torch.log_softmax(lm(torch.tensor([prompt])).float(), -1)[0]
        assert choice["text"] == lm.tokenizer.decode(prompt)
        got = choice["logprobs"]["token_logprobs"]
        assert got[0] is None
        assert got[1:] == pytest.approx([lp[i, prompt[i + 1]].item() for i in range(len(prompt) - 1)], abs=1e-4)


def test_echo_scores_a_batch_whose_prompts_need_several_forwards(lm):
    """Prompts scored together go in left-padded forwards of at most BATCH_TOKENS (1024) padded tokens
    (models/lfm2/scoring.py): 40 prompts of up to 200 tokens take several, a one-token prompt
    none (nothing before it); every prompt keeps its own entries, in its place."""
    rng = random.Random(3)
    prompts = [[rng.randrange(256) for _ in range(rng.randint(100, 200))] for _ in range(39)] + [[65]]
    rng.shuffle(prompts)
    with real_lm_client(max_sequence_length=256, max_prompts=64) as client:   # lm's seeded twin
        reply = _complete(client, prompt=prompts, max_tokens=0, echo=True, logprobs=0)
    assert len(reply["choices"]) == 40
    for prompt, choice in zip(prompts, reply["choices"]):
        got = choice["logprobs"]["token_logprobs"]
        assert len(got) == len(prompt) and got[0] is None
        if len(prompt) > 1:
            with torch.inference_mode():
                lp = torch.log_softmax(lm(torch.tensor([prompt])).float(), -1)[0]
            assert got[1:] == pytest.approx([lp[i, prompt[i + 1]].item() for i in range(len(prompt) - 1)], abs=1e-4)


def test_a_streamed_batch_interleaves_choices_by_index(client):
    prompts = ["abc", "xyz"]
    body = dict(prompt=prompts, max_tokens=4, temperature=0, n=2, echo=True)
    whole = _complete(client, **body)
    r = client.post("/v1/completions", json={"ignore_eos": True, "stream": True,
                                             "stream_options": {"include_usage": True}, **body})
    assert r.status_code == 200
    import json
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    texts, finishes = {}, {}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        finishes[choice["index"]] = choice["finish_reason"] or finishes.get(choice["index"])
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert all(texts[i].startswith(prompts[i // 2]) for i in range(4))
    assert finishes == {i: "length" for i in range(4)}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


@pytest.mark.parametrize("prompt, needle", [
    pytest.param(["a"] * 5, "prompt: at most 4 prompts per request (DWSERVE_MAX_PROMPTS), got 5", id="above-max-prompts"),
    pytest.param([[65, 66], [70] * 300], "prompt[1]: ", id="second-too-long"),
    pytest.param([[65], [-1]], "prompt[1]: ", id="second-negative-id"),
])
def test_a_bad_prompt_of_a_batch_is_a_400_naming_it(client, prompt, needle):
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
    assert r.status_code == 400 and needle in error_message(r), r.text
    assert client.get("/v2/health/ready").status_code == 200


def test_closing_an_echoed_stream_closes_its_generation():
    """A streamed echo's choice wraps its generation's events (routes_openai_completions._prefixed):
    closing the wrapper (the client left) must close them, which frees the sequence's row, at
    once rather than whenever the garbage collector finds them."""
    import asyncio

    from service.routes_openai_completions import _prefixed
    closed = []

    async def events():
        try:
            yield {"text": "a"}
            yield {"text": "b"}
        finally:
            closed.append(True)

    async def run():
        inner = events()
        first = await inner.__anext__()
        outer = _prefixed({"echo": True}, inner)
        assert await outer.__anext__() == {"echo": True} and await outer.__anext__() == {"text": "b"}
        await outer.aclose()
        assert closed == [True]   # here: asyncio.run's end closes every generator left open anyway
        return first
    assert asyncio.run(run()) == {"text": "a"}
