"""transformers'/vLLM's sampling extensions in models/lfm2: repetition_penalty (on the prompt's
and the generated tokens) against transformers' RepetitionPenaltyLogitsProcessor and a
reference written out (continuous_helpers.adjusted_greedy: a full forward per token), min_tokens (stop tokens held off), min_p
through a continuous batch equal to generate() alone, and bad values refused."""
import random

import pytest
import torch

from models.lfm2.continuous import ContinuousBatch, Sequence
from models.lfm2.logit_processing import penalize_repetition, seen_mask

import continuous_helpers

model = continuous_helpers.model   # the tiny model, one per test module


@pytest.mark.parametrize("penalty", [pytest.param(p, id=f"r={p:g}") for p in (1.3, 0.6, 2.0)])
def test_repetition_penalty_equals_transformers_processor(penalty):
    processors = pytest.importorskip("transformers.generation.logits_process")
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 50, generator=g) * 3
    ids = torch.randint(0, 50, (3, 12), generator=g)                 # repeats within a row on purpose
    want = processors.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    got = penalize_repetition(logits, seen_mask(ids.tolist(), 50, "cpu"), penalty)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(got, logits)


def test_logit_bias_is_added_before_the_repetition_penalty():
    """transformers' order (SequenceBiasLogitsProcessor, then RepetitionPenaltyLogitsProcessor)
    and vLLM's sampler's (logit bias, then penalties): the penalty scales a biased logit, and a
    bias that makes a seen token's logit positive is divided, not multiplied. The bias was added
    after the penalty: a seen token biased +3 from -0.75 got 1.50 instead of 1.12."""
    processors = pytest.importorskip("transformers.generation.logits_process")
    from types import SimpleNamespace

    from models.lfm2 import logit_processing

    logits = torch.randn(1, 20, generator=torch.Generator().manual_seed(0)) * 3
    prompt, bias = [1, 2, 3, 4, 5], {2: 3.0, 4: -2.0, 7: 5.0}          # 2 and 4 seen, 7 not
    seq = SimpleNamespace(prompt=prompt, tokens=[], repetition_penalty=2.0, presence_penalty=0.0,
                          frequency_penalty=0.0, logit_bias=bias, stop_token_ids=(), min_tokens=0, seen=None,
                          seen_upto=0)
    ids = torch.tensor([prompt])
    biased = processors.SequenceBiasLogitsProcessor({(t,): b for t, b in bias.items()})(ids, logits.clone())
    want = processors.RepetitionPenaltyLogitsProcessor(2.0)(ids, biased)
    torch.testing.assert_close(logit_processing.apply([seq], logits), want, rtol=0, atol=1e-6)


def test_repetition_penalty_and_min_tokens_in_a_continuous_batch(model):
    plain = continuous_helpers.adjusted_greedy(model, [95, 34, 78, 5], 6)   # greedy repeats the prompt's 34
    cases = [dict(repetition=1.5), dict(repetition=0.5), dict(repetition=1.2, presence=0.7),
             dict(min_tokens=4, stops=(plain[0], plain[2])), dict(min_tokens=6, stops=(plain[1],), repetition=1.1)]
    engine = ContinuousBatch(model, capacity=3, max_length=40)
    seqs = [engine.add(Sequence([95, 34, 78, 5], max_new_tokens=6, repetition_penalty=c.get("repetition", 1.0),
                                presence_penalty=c.get("presence", 0.0), min_tokens=c.get("min_tokens", 0),
                                stop_token_ids=c.get("stops", ()))) for c in cases]
    while engine.busy:
        engine.step()
    for s, c in zip(seqs, cases):
        assert s.tokens == continuous_helpers.adjusted_greedy(model, s.prompt, 6, **c), c
    assert seqs[0].tokens != plain and seqs[1].tokens != plain           # the penalty changed something
    assert len(seqs[3].tokens) >= 4 and not set(seqs[3].tokens[:3]) & set(cases[3]["stops"])
    assert seqs[3].tokens != plain[:1]                                   # without min_tokens: stopped at once


def test_sampled_extensions_in_a_batch_equal_generate_alone(model):
    """min_p and repetition_penalty sampled with a seed give each sequence the tokens that
    generate() gives it alone (the same per-sequence generator), whatever shares its batch."""
    rng = random.Random(8)
    seqs = []
    for i in range(7):
        prompt = [rng.randrange(97) for _ in range(rng.randint(1, 9))]
        seqs.append(Sequence(prompt, max_new_tokens=rng.randint(2, 10), temperature=0.9, seed=40 + i,
                             min_p=(0.0, 0.05, 0.2)[i % 3], repetition_penalty=(1.0, 1.3, 0.8, 1.1)[i % 4],
                             top_k=30 if i % 2 else None))
    engine = ContinuousBatch(model, capacity=3, max_length=40)
    continuous_helpers.run_staggered(engine, seqs, rng)
    for s in seqs:
        (want,) = model.generate([s.prompt], max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                 top_k=s.top_k, seed=s.seed, min_p=s.min_p, repetition_penalty=s.repetition_penalty,
                                 cuda_graph=False)
        assert s.tokens == want, s


def test_generate_repetition_penalty_equals_the_reference(model):
    """generate() (the batch path) applies the penalty per row, on that row's prompt and
    generated tokens only: a batch gives each prompt the reference's greedy tokens."""
    prompts = [[5, 9, 4, 9], [7, 7, 2], [3]]
    got = model.generate(prompts, max_new_tokens=6, repetition_penalty=1.4, cuda_graph=False)
    assert got == [continuous_helpers.adjusted_greedy(model, p, 6, repetition=1.4) for p in prompts]


@pytest.mark.parametrize("bad, match", [
    pytest.param(dict(repetition_penalty=0.0), "repetition_penalty", id="repetition-0"),
    pytest.param(dict(repetition_penalty=-1.0), "repetition_penalty", id="repetition-negative"),
    pytest.param(dict(repetition_penalty=True), "repetition_penalty", id="repetition-bool"),
    pytest.param(dict(repetition_penalty=101.0), "repetition_penalty", id="repetition-huge"),
    pytest.param(dict(min_p=-0.1), "min_p", id="min_p-negative"),
    pytest.param(dict(min_p=1.5), "min_p", id="min_p-over-1"),
    pytest.param(dict(min_tokens=3), "min_tokens", id="min_tokens-over-max"),
    pytest.param(dict(min_tokens=-1), "min_tokens", id="min_tokens-negative"),
    pytest.param(dict(min_tokens=1.0), "min_tokens", id="min_tokens-float"),
])
def test_bad_values_are_refused_naming_the_field(model, bad, match):
    engine = ContinuousBatch(model, capacity=1, max_length=20)
    with pytest.raises(ValueError, match=match):
        engine.add(Sequence([1, 2], max_new_tokens=2, **bad))
    generate_args = {k: v for k, v in bad.items() if k != "min_tokens"}
    if generate_args:
        with pytest.raises(ValueError, match=match):
            model.generate([[1, 2]], max_new_tokens=2, temperature=1.0, **generate_args)


@pytest.mark.parametrize("penalty", [pytest.param(p, id=f"r={p:g}") for p in (1e-40, 1e-300)])
def test_a_tiny_repetition_penalty_samples_without_failing_the_batch(model, penalty):
    """A penalty in (0, 1) so small that a positive logit divided by it overflows float32:
    sampled, the +inf became NaN probabilities (sampling shifts by the largest logit) and
    step() raised, failing every generation in flight on the server. The repeated tokens now
    just dominate, and the sequence beside it gets its tokens."""
    engine = ContinuousBatch(model, capacity=2, max_length=20)
    other = engine.add(Sequence([5, 6, 7], max_new_tokens=6))
    seq = engine.add(Sequence([1, 2, 3, 4], max_new_tokens=4, temperature=0.7, seed=1, repetition_penalty=penalty))
    while engine.busy:
        engine.step()
    assert len(seq.tokens) == 4 and other.tokens == continuous_helpers.alone(model, other)
    (got,) = model.generate([[1, 2, 3, 4]], max_new_tokens=4, temperature=0.7, seed=1, repetition_penalty=penalty,
                            cuda_graph=False)
    assert got == seq.tokens
