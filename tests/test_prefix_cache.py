"""Prefix caching (models/lfm2/prefix_cache.py): the conv states taken at block boundaries
and the keys/values kept equal a prefill of the prefix alone; a continuous batch with the
cache gives every sequence the tokens it gets from generate() alone while reusing prefixes;
and the cache stays within its byte budget."""
import copy
import random

import pytest
import torch

from models.depthwise import use_impl
from models.lfm2.continuous import ContinuousBatch, Sequence
from models.lfm2.prefill import Prefill
from models.lfm2.prefix_cache import PrefixCache

from continuous_helpers import alone, run_staggered
from test_decoding import TINY, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=11)


def _tokens(rng, n):
    return [rng.randrange(TINY.vocab_size) for _ in range(n)]


@pytest.mark.parametrize("impl, chunk", [pytest.param(i, c, id=f"{i}-chunk{c}") for i, c in
                                         (("slice_sum", None), ("native", 3), ("per_group", 5))])
def test_kept_state_equals_prefilling_the_prefix_alone(model, impl, chunk):
    """A left-padded group of three, prefilled in chunks: each row's kept state at each
    boundary (conv states taken mid-chunk, keys/values sliced after) is the state a one-row
    prefill of just that prefix ends with."""
    rng = random.Random(3)
    prompts = [_tokens(rng, n) for n in (14, 9, 17)]
    cache = PrefixCache(max_bytes=1 << 30, block=4)
    with use_impl(impl):
        group = Prefill(model, prompts, chunk=chunk, prefix_cache=cache)
        while group.advance() is None:
            pass
        assert len(cache.chains) == 3 and not group.cache.conv_taps and not group.cache.tapped
        checked = 0
        for prompt in prompts:
            for b in range(4, len(prompt), 4):
                chain, p = cache.lookup(prompt[:b] + [0])
                ref = Prefill(model, [prompt[:b]])
                ref.advance()
                for got, want in zip(chain.conv[p], ref.cache.conv_states):
                    if want is not None:
                        torch.testing.assert_close(got, want[0], rtol=1e-5, atol=1e-5)
                        checked += 1
                for got, want in zip((*chain.keys, *chain.values), (*ref.cache.keys, *ref.cache.values)):
                    if want is not None:
                        torch.testing.assert_close(got[:, :p], want[0, :, :p], rtol=1e-5, atol=1e-5)
        assert checked > 0


def _conversations(rng):
    """Prompts that share block-aligned prefixes in several ways: one system prompt, turns
    that extend an earlier prompt, a prefix that stops mid-block, and unrelated prompts."""
    system = _tokens(rng, 9)
    turn1 = system + _tokens(rng, 6)
    out = [system + _tokens(rng, rng.randint(1, 7)) for _ in range(5)]
    out += [turn1, turn1 + _tokens(rng, 5), turn1 + _tokens(rng, 9)]
    out += [system[:6] + _tokens(rng, 5), _tokens(rng, 10), _tokens(rng, 3)]
    return out


@pytest.mark.parametrize("impl, chunk", [pytest.param(i, c, id=f"{i}-chunk{c}") for i, c in
                                         (("slice_sum", None), ("native", 4), ("fused", 3))])
def test_sequences_get_the_tokens_they_get_alone_while_reusing_prefixes(model, impl, chunk):
    rng = random.Random(5)
    seqs = []
    for i, prompt in enumerate(_conversations(rng)):
        sampled = i % 3 == 1
        seqs.append(Sequence(prompt, max_new_tokens=rng.randint(2, 8), temperature=0.8 if sampled else 0.0,
                             top_k=20 if sampled else None, seed=50 + i))
    cache = PrefixCache(max_bytes=1 << 30, block=4)
    with use_impl(impl):
        want = [alone(model, s) for s in seqs]
        engine = ContinuousBatch(model, capacity=3, max_length=48, prefill_chunk=chunk, prefix_cache=cache)
        run_staggered(engine, [copy.copy(s) for s in seqs[:1]], rng)   # the system prompt is kept first
        run_staggered(engine, later := [copy.copy(s) for s in seqs[1:]], rng)
    got = [alone(model, seqs[0])] + [s.tokens for s in later]
    assert got == want
    assert cache.hits >= 6 and cache.hit_tokens >= 6 * 4


def test_a_cached_prefix_is_not_computed_again(model):
    """The hit's columns are restored, not run: the model sees only the rest of the prompt."""
    rng = random.Random(8)
    system = _tokens(rng, 12)
    cache = PrefixCache(max_bytes=1 << 30, block=4)
    engine = ContinuousBatch(model, capacity=2, max_length=40, prefix_cache=cache)
    columns = []
    real = model.hidden_states

    def counting(input_ids, attention_mask=None, cache=None):
        columns.append(input_ids.shape[1])
        return real(input_ids, attention_mask, cache)

    model.hidden_states = counting
    try:
        for tail in (_tokens(rng, 3), _tokens(rng, 2)):
            columns.clear()
            seq = engine.add(Sequence(system + tail, max_new_tokens=1))
            while engine.busy:
                engine.step()
            assert seq.done
            prefilled = columns[0]
    finally:
        del model.hidden_states
    assert prefilled == 2 and cache.hit_tokens == 12     # 12 cached tokens, 2 computed


def test_the_cache_stays_within_its_budget_least_recently_used_first(model):
    rng = random.Random(9)
    prompts = [_tokens(rng, 13) for _ in range(6)]
    probe = PrefixCache(max_bytes=1 << 30, block=4)
    p = Prefill(model, prompts[:1], prefix_cache=probe)
    p.advance()
    one = probe.nbytes                                     # what one 13-token prompt keeps
    cache = PrefixCache(max_bytes=int(2.5 * one), block=4)
    for prompt in prompts[:3]:
        p = Prefill(model, [prompt], prefix_cache=cache)
        p.advance()
        assert cache.nbytes <= cache.max_bytes
    assert cache.lookup(prompts[0] + [1]) is None          # evicted: the oldest
    assert cache.lookup(prompts[2] + [1])[1] == 12
    assert cache.lookup(prompts[1] + [1])[1] == 12         # touched: now the newest
    p = Prefill(model, [prompts[3]], prefix_cache=cache)
    p.advance()
    assert cache.lookup(prompts[2] + [1]) is None and cache.lookup(prompts[1] + [1]) is not None
    assert {id(c) for c, _ in cache.index.values()} <= set(cache.chains)   # no entry of an evicted chain
    with pytest.raises(ValueError, match="one-prompt group"):
        Prefill(model, prompts[:2], prefix_cache=cache, hit=cache.lookup(prompts[1] + [1]))


def test_a_hash_collision_is_not_a_hit(model, monkeypatch):
    """Keys are hashes; a hit is confirmed against the chain's tokens."""
    from models.lfm2 import prefix_cache as pc
    monkeypatch.setattr(pc, "_keys", lambda prompt, block: {b: b for b in pc._boundaries(len(prompt), block)})
    rng = random.Random(4)
    a, b = _tokens(rng, 9), _tokens(rng, 9)
    cache = PrefixCache(max_bytes=1 << 30, block=4)
    Prefill(model, [a], prefix_cache=cache).advance()
    assert cache.lookup(a[:8] + [3])[1] == 8
    assert cache.lookup(b) is None                    # same keys, other tokens
