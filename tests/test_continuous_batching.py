"""Continuous batching (models/lfm2/slots.py, continuous.py) against generating alone.

The reference is LFM2ForCausalLM.generate on one prompt at a time (tests/continuous_helpers.py):
every sequence of a continuous batch, however it was interleaved with others joining and
leaving, must get the tokens it gets alone. Here: staggered loads for every impl and prefill
chunk size, rows that move when one retires, cancelling, long prompts joining in chunks,
admission within max_length, refused sequences, the cache's bytes, equal prompts prefilled
once. The CUDA-graph path is tests/test_continuous_graphs.py; logprobs, penalties and
logit_bias tests/test_continuous_sampling.py.
"""
import random

import pytest
import torch

from models.depthwise import use_impl
from models.lfm2 import slots as slots_mod
from models.lfm2.continuous import ContinuousBatch, Sequence

import continuous_helpers
from continuous_helpers import alone, random_sequences, run_staggered
from test_decoding import TINY

model = continuous_helpers.model   # the tiny model, one per test module


@pytest.mark.parametrize("impl, chunk", [pytest.param(i, c, id=f"{i}-chunk{c}") for i, c in
                                         (("slice_sum", None), ("native", None), ("fused", None),
                                          ("slice_sum", 3), ("fused", 4))])
def test_every_sequence_gets_the_tokens_it_gets_alone(model, impl, chunk):
    """chunk: prompts prefilled `chunk` columns per step (prompts here are 1-12 tokens)."""
    rng = random.Random(7)
    seqs = random_sequences(14, rng, TINY.vocab_size)
    with use_impl(impl):
        want = [alone(model, s) for s in seqs]
        engine = ContinuousBatch(model, capacity=4, max_length=40, prefill_chunk=chunk)
        steps = run_staggered(engine, seqs, rng)
    assert [s.tokens for s in seqs] == want
    assert all(s.done and s.row is None for s in seqs) and engine.decoder.live == 0
    for s in seqs:
        stopped = bool(s.stop_token_ids) and s.tokens[-1] in s.stop_token_ids
        assert s.finish_reason == ("stop" if stopped else "length")
    # Sharing happened: far fewer steps than generating them one after another.
    assert steps < (0.6 if chunk is None else 0.8) * sum(len(w) for w in want)
    assert len({tuple(w) for w in want}) > 10                     # the sequences differ


def test_rows_stay_a_prefix_and_follow_their_sequences(model):
    """Retiring a middle row moves the last live row into it; its sequence goes on unchanged."""
    seqs = [Sequence([3, 4, 5], max_new_tokens=9), Sequence([8], max_new_tokens=2),
            Sequence([1, 2], max_new_tokens=9)]
    want = [alone(model, s) for s in seqs]
    engine = ContinuousBatch(model, capacity=3, max_length=32)
    for s in seqs:
        engine.add(s)
    engine.step()                                                # all three admitted: rows 0, 1, 2
    assert [s.row for s in seqs] == [0, 1, 2]
    engine.step()                                                # the second is done: row 2 -> 1
    assert seqs[1].done and [s.row for s in seqs] == [0, None, 1] and engine.decoder.live == 2
    while engine.busy:
        engine.step()
    assert [s.tokens for s in seqs] == want


def test_cancel_frees_the_row_for_a_waiting_sequence(model):
    first, second = Sequence([5, 6], max_new_tokens=30), Sequence([7, 7, 7], max_new_tokens=5)
    engine = ContinuousBatch(model, capacity=1, max_length=40)
    engine.add(first)
    engine.add(second)
    engine.step()
    assert first.row == 0 and second.row is None                 # the batch is full: it waits
    engine.cancel(first)
    engine.step()
    assert first.finish_reason == "cancelled" and len(first.tokens) == 1
    assert second.row == 0
    while engine.busy:
        engine.step()
    assert second.tokens == alone(model, Sequence([7, 7, 7], max_new_tokens=5))


def test_a_long_prompt_joins_in_chunks_while_the_others_keep_decoding(model):
    """prefill_chunk=4: a 14-token prompt takes 4 steps to join; the live sequence gets a token
    at each of them, the joining one only once its prefill is done; both as alone."""
    live, joining = Sequence([3, 1, 4], max_new_tokens=10), Sequence(list(range(1, 15)), max_new_tokens=3)
    engine = ContinuousBatch(model, capacity=2, max_length=40, prefill_chunk=4)
    engine.add(live)
    engine.step()                                                # live joins (3 columns: 1 chunk)
    engine.add(joining)
    got = [[s for s, _ in engine.step()] for _ in range(4)]
    assert got == [[live], [live], [live], [live, joining]]      # 4 + 4 + 4 + 2 columns
    assert engine.prefill is None and joining.row == 1
    while engine.busy:
        engine.step()
    assert live.tokens == alone(model, Sequence([3, 1, 4], max_new_tokens=10))
    assert joining.tokens == alone(model, Sequence(list(range(1, 15)), max_new_tokens=3))


def test_cancelled_while_joining_never_gets_a_token(model):
    a, b = Sequence([5] * 9, max_new_tokens=4), Sequence([6] * 9, max_new_tokens=4)
    engine = ContinuousBatch(model, capacity=2, max_length=40, prefill_chunk=3)
    engine.add(a)
    engine.add(b)
    assert engine.step() == [] and engine.joining == [a, b]      # first chunk of three
    engine.cancel(a)
    engine.step()
    out = engine.step()                                          # the last chunk: b joins alone
    assert [s for s, _ in out] == [b] and a.tokens == [] and a.finish_reason == "cancelled"
    assert engine.decoder.live == 1 and b.row == 0
    engine.cancel(b)
    assert engine.step() == [] and not engine.busy



def test_a_cancelled_long_prompt_stops_holding_back_its_group(model):
    """A 40-token prompt and a 3-token one join as one left-padded group, 4 columns a step. The
    long one is cancelled after the first chunk: the short one's columns (the last 3) were not
    reached yet, so nothing of it is lost by regrouping. It waited 9 more steps (36 columns of
    its padding, prefilled for a prompt nobody wanted) for its first token; now the next step
    gives it, and its tokens are those it gets alone."""
    a, b = Sequence(list(range(1, 41)), max_new_tokens=3), Sequence([7, 8, 9], max_new_tokens=3)
    want = alone(model, b)
    engine = ContinuousBatch(model, capacity=2, max_length=64, prefill_chunk=4)
    engine.add(a)
    engine.add(b)
    assert engine.step() == [] and engine.joining == [a, b] and engine.prefill.done == 4
    engine.cancel(a)
    assert [s for s, _ in engine.step()] == [b]
    while engine.busy:
        engine.step()
    assert b.tokens == want and a.tokens == [] and a.finish_reason == "cancelled"
    assert engine.decoder.live == 0 and not engine.decoder.store.key_mask.any()

def test_admission_keeps_each_group_within_max_length(model):
    """A long prompt and a long generation are not padded into one group past max_length."""
    long_prompt = Sequence(list(range(1, 21)), max_new_tokens=2)
    long_gen = Sequence([4], max_new_tokens=18)
    engine = ContinuousBatch(model, capacity=2, max_length=24)
    engine.add(long_prompt)
    engine.add(long_gen)
    engine.step()
    assert long_prompt.row == 0 and long_gen.row is None         # 20 + 18 > 24: admitted later
    while engine.busy:
        engine.step()
    assert long_gen.tokens == alone(model, Sequence([4], max_new_tokens=18))


@pytest.mark.parametrize("bad, match", [
    pytest.param(Sequence([], max_new_tokens=2), "non-empty", id="empty-prompt"),
    pytest.param(Sequence([500], max_new_tokens=2), r"\[0, 97\)", id="token-out-of-vocab"),
    pytest.param(Sequence([1] * 10, max_new_tokens=30), "max_length 32", id="too-long"),
    pytest.param(Sequence([1], max_new_tokens=2, temperature=-1.0), "temperature", id="temperature"),
])
def test_bad_sequences_are_refused_naming_what_was_expected(model, bad, match):
    engine = ContinuousBatch(model, capacity=2, max_length=32)
    with pytest.raises(ValueError, match=match):
        engine.add(bad)
    assert not engine.busy


def test_cache_bytes_counts_every_row_and_slot(model):
    engine = ContinuousBatch(model, capacity=3, max_length=32)
    kv = 2 * 2 * 3 * TINY.num_key_value_heads * 32 * TINY.head_dim * 4        # 2 attention layers, K+V
    conv = 2 * 3 * TINY.hidden_size * (TINY.conv_L_cache - 1) * 4              # 2 conv layers
    assert engine.cache_bytes == kv + conv


def test_zero_new_tokens_is_done_at_once(model):
    engine = ContinuousBatch(model, capacity=2, max_length=32)
    seq = engine.add(Sequence([1, 2], max_new_tokens=0))
    assert seq.done and seq.finish_reason == "length" and not engine.busy


def test_equal_prompts_are_prefilled_once(model):
    """n choices / repeated requests: one prefill row per distinct prompt, each sequence still
    gets what it gets alone (its own sampler)."""
    engine = ContinuousBatch(model, capacity=6, max_length=40)
    prompt = [4, 8, 15, 16, 23, 42]
    seqs = [Sequence(list(prompt), max_new_tokens=7, temperature=0.9, seed=s) for s in (1, 2, 3)]
    seqs += [Sequence(list(prompt), max_new_tokens=5), Sequence([1, 2], max_new_tokens=4, temperature=0.5, seed=9)]
    want = [alone(model, s) for s in seqs]
    prefill_rows = []
    real = slots_mod.SlotDecoder.attach

    def recording(self, prefill, src_rows=None):
        prefill_rows.append((prefill.rows, list(src_rows or [])))
        return real(self, prefill, src_rows)

    slots_mod.SlotDecoder.attach = recording
    try:
        for s in seqs:
            engine.add(s)
        while engine.busy:
            engine.step()
    finally:
        slots_mod.SlotDecoder.attach = real
    assert [s.tokens for s in seqs] == want
    assert prefill_rows == [(2, [0, 0, 0, 0, 1])]


def test_a_joining_group_is_never_counted_twice_while_it_is_sampled(model):
    """The server's admission check (service/generation_room.free_rows) reads rows + joining
    from another thread while step() runs: when a group's prefill ends, the group must be in
    exactly one of the two lists while its first tokens are sampled."""
    engine = ContinuousBatch(model, capacity=4, max_length=40)
    seen, sample = [], engine._sample

    def watched(seqs, logits):
        seen.append(len(engine.rows) + len(engine.joining))
        return sample(seqs, logits)

    engine._sample = watched
    for prompt in ([1, 2, 3], [4, 5, 6]):
        engine.add(Sequence(prompt, max_new_tokens=5))
    with torch.inference_mode():
        engine.step()
        engine.step()
    assert seen and all(held == 2 for held in seen), seen
