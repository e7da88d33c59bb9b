"""The continuous-batching tests' reference and drivers (models/lfm2/continuous.py), shared by
tests/test_continuous_*.py, test_prefix_cache.py, test_lfm3.py and test_lfm2_moe.py: `alone`
is LFM2ForCausalLM.generate on one prompt (the dynamic path, itself checked against
transformers in test_lfm2.py), `adjusted_greedy` writes a sequence's logit adjustments out, `random_sequences` and
`run_staggered` make and feed a mixed load, `assert_cuda_graphs_replay_eager` checks a model family's CUDA graphs, and `model` is
the tiny model as a module-scoped fixture (a test module takes it with
`model = continuous_helpers.model`). Imports models only: gpu.sh's device runs these."""
import random

import pytest
import torch

from models.lfm2.continuous import ContinuousBatch, Sequence

from test_decoding import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5)


def alone(model, seq: Sequence) -> list[int]:
    (out,) = model.generate([seq.prompt], max_new_tokens=seq.max_new_tokens, temperature=seq.temperature,
                            top_k=seq.top_k, top_p=seq.top_p, seed=seq.seed,
                            stop_token_ids=seq.stop_token_ids, cuda_graph=False)
    return out


def adjusted_greedy(model, prompt, n, *, repetition=1.0, presence=0.0, frequency=0.0, bias=None,
                    min_tokens=0, stops=()) -> list[int]:
    """Independent reference for a sequence's logit adjustments (logit_processing.py): a full
    forward per token, the adjustments written out in vLLM's order (logit_bias; repetition on
    the prompt's and generated tokens; presence/frequency on the generated ones; stop tokens
    -inf before min_tokens), greedy, stopping at a stop token (kept)."""
    out = []
    for _ in range(n):
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + out])).float()[0, -1]
        logits = logits.clone()   # a normal tensor, for the in-place adjustments below
        for j, b in (bias or {}).items():
            logits[j] += b
        for j in set(prompt + out):
            logits[j] = logits[j] / repetition if logits[j] > 0 else logits[j] * repetition
        for j in set(out):
            logits[j] -= presence + frequency * out.count(j)
        if len(out) < min_tokens:
            for s in stops:
                logits[s] = float("-inf")
        out.append(int(logits.argmax()))
        if out[-1] in stops:
            break
    return out


def random_sequences(n: int, rng: random.Random, vocab: int) -> list[Sequence]:
    seqs = []
    for i in range(n):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
        sampled = i % 3 == 2
        seqs.append(Sequence(prompt, max_new_tokens=rng.randint(1, 14),
                             temperature=0.8 if sampled else 0.0, top_k=20 if sampled else None,
                             top_p=0.9 if i % 6 == 5 else None, seed=100 + i,
                             stop_token_ids=(rng.randrange(vocab),) if i % 4 == 1 else ()))
    return seqs


def run_all(model, seqs: list[Sequence], max_length: int = 256) -> list[Sequence]:
    """Add every sequence to one engine of their number's capacity and step until all are done."""
    engine = ContinuousBatch(model, capacity=len(seqs), max_length=max_length)
    for s in seqs:
        engine.add(s)
    while engine.busy:
        engine.step()
    return seqs


def run_staggered(engine: ContinuousBatch, seqs: list[Sequence], rng: random.Random):
    """Add the sequences a few at a time between steps, as requests arriving under load."""
    pending = list(seqs)
    steps = 0
    while pending or engine.busy:
        for _ in range(rng.randint(0, 3)):
            if pending:
                engine.add(pending.pop(0))
        if engine.busy:
            engine.step()
            steps += 1
        assert steps < 1000
    return steps


def assert_cuda_graphs_replay_eager(model, new_tokens: int, max_length: int) -> None:
    """On CUDA, two prompts: generate() through its captured step and a continuous batch
    through its bucket graphs both give the eager tokens (for the model families' own graphs:
    LFM3's sliding-window masks, LFM2-MoE's all-experts routing)."""
    prompts = [[5, 9, 11, 4, 7], [8, 3]]
    want = model.generate(prompts, max_new_tokens=new_tokens, cuda_graph=False)
    assert model.generate(prompts, max_new_tokens=new_tokens, cuda_graph=True) == want
    seqs = [Sequence(p, max_new_tokens=new_tokens) for p in prompts]
    engine = ContinuousBatch(model, capacity=2, max_length=max_length, cuda_graph=True)
    for s in seqs:
        engine.add(s)
    while engine.busy:
        engine.step()
    assert [s.tokens for s in seqs] == want and len(set(want[0])) > 3
