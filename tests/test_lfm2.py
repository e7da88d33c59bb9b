"""LFM2 against transformers' Lfm2ForCausalLM (the independent reference) on tiny random
checkpoints: logits and greedy tokens for every CPU depthwise impl, cached decoding,
left-padded batches, sampling, repetition penalty, stop tokens.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.depthwise import use_impl  # noqa: E402
from models.lfm2 import LFM2ForCausalLM  # noqa: E402
from models.lfm2.layers import short_conv_reference  # noqa: E402

from hf_reference import random_checkpoint  # noqa: E402

# Odd sizes on purpose: 48 channels, head_dim 8, GQA 6 -> 2 heads, FFN adjusted 96 -> 64.
TINY = dict(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
            block_multiple_of=16, layer_types=["conv", "full_attention", "conv", "conv"],
            pad_token_id=0, bos_token_id=1, eos_token_id=2, rope_parameters={
                "rope_type": "default", "rope_theta": 10000.0})


def make_hf(tmp_path, seed=0, **changes):
    """A randomly initialised HF Lfm2ForCausalLM (norm weights too), saved to tmp_path."""
    return random_checkpoint(transformers, "Lfm2", {**TINY, **changes}, tmp_path, seed)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_tiny")
    hf = make_hf(path)
    return hf, LFM2ForCausalLM.from_pretrained(path), path


def rand_ids(b, L, seed=0, vocab=101):
    return torch.randint(3, vocab, (b, L), generator=torch.Generator().manual_seed(seed))


CPU_IMPLS = [pytest.param("per_group", id="per_group"), pytest.param("slice_sum", id="slice_sum"),
             pytest.param("native", id="native"), pytest.param("auto", id="auto")]


@pytest.mark.parametrize("impl", CPU_IMPLS + [
    pytest.param("compiled", id="compiled"),
    pytest.param("fused", id="fused-interpreter", marks=pytest.mark.fused)])
def test_logits_match_transformers(pair, impl):
    hf, ours, _ = pair
    ids = rand_ids(2, 11, seed=1)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    with use_impl(impl), torch.inference_mode():
        got = ours(ids)
    assert got.shape == (2, 11, 101)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_greedy_generation_matches_transformers(pair, impl):
    hf, ours, _ = pair
    prompt = rand_ids(1, 7, seed=2)
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10,
                          do_sample=False, eos_token_id=None, pad_token_id=0)[0, 7:].tolist()
    with use_impl(impl):
        got = ours.generate(prompt, max_new_tokens=10)
    assert got == [ref]


@pytest.mark.parametrize("penalty", [pytest.param(r, id=f"r={r:g}") for r in (1.3, 0.7)])
def test_repetition_penalty_matches_transformers(pair, penalty):
    """Greedy with transformers' repetition_penalty (prompt and generated tokens): the same
    tokens, and not the unpenalised ones (the penalty does something on this prompt)."""
    hf, ours, _ = pair
    prompt = torch.tensor([[5, 9, 5, 9, 5, 9, 5]])
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                          repetition_penalty=penalty, eos_token_id=None, pad_token_id=0)[0, 7:].tolist()
    assert ours.generate(prompt, max_new_tokens=12, repetition_penalty=penalty) == [ref]
    assert ours.generate(prompt, max_new_tokens=12) != [ref]


@pytest.mark.parametrize("changes", [
    pytest.param(dict(conv_bias=True, conv_L_cache=4), id="bias-K4"),
    pytest.param(dict(conv_L_cache=1, tie_word_embeddings=False), id="K1-untied"),
    pytest.param(dict(layer_types=["conv"] * 4), id="all-conv"),
])
def test_config_variants_match_transformers(tmp_path, changes):
    hf = make_hf(tmp_path, seed=3, **changes)
    ours = LFM2ForCausalLM.from_pretrained(tmp_path)
    ids = rand_ids(2, 9, seed=4)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    torch.testing.assert_close(ours.next_token_logits(ids), ref[:, -1].float(), rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(ours(ids), ref, rtol=1e-4, atol=1e-4)


def test_an_explicit_head_dim_is_honoured(tmp_path):
    """config.json's head_dim (16, not hidden / heads = 8): transformers' Lfm2Attention sizes
    q/k/v/o by it; it was read for LFM3 only, so such an LFM2 checkpoint was refused."""
    hf = make_hf(tmp_path, seed=5, head_dim=16)
    if hf.model.layers[1].self_attn.q_proj.weight.shape[0] != 6 * 16:
        pytest.skip(f"transformers {transformers.__version__}'s Lfm2 ignores head_dim")
    ours = LFM2ForCausalLM.from_pretrained(tmp_path)
    assert ours.config.head_dim == 16 and ours.config.to_dict()["head_dim"] == 16
    ids = rand_ids(2, 9, seed=6)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    with torch.inference_mode():
        torch.testing.assert_close(ours(ids), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl, chunks", [
    pytest.param("per_group", [5, 1, 1, 1, 4], id="per_group-prefill-decode-prefill"),
    pytest.param("slice_sum", [12], id="slice_sum-one-prefill"),
    pytest.param("slice_sum", [1] * 12, id="slice_sum-token-by-token"),
    pytest.param("native", [7, 1, 1, 3], id="native-prefill-decode-prefill"),
])
def test_cached_decoding_equals_full_recomputation(pair, impl, chunks):
    _, ours, _ = pair
    ids = rand_ids(3, 12, seed=5)
    with use_impl(impl), torch.inference_mode():
        full = ours(ids)
        cache, outs, s = ours.new_cache(3, 16), [], 0
        for n in chunks:
            outs.append(ours(ids[:, s:s + n], cache=cache))
            s += n
    assert cache.length == 12 and cache.positions.tolist() == [12] * 3
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-4)


def left_pad(rows, pad=0):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


@pytest.mark.parametrize("impl", [pytest.param("per_group", id="per_group"),
                                  pytest.param("native", id="native")])
def test_padded_batch_equals_each_prompt_alone(pair, impl):
    _, ours, _ = pair
    rows = [rand_ids(1, n, seed=10 + n)[0].tolist() for n in (3, 9, 6)]
    ids, mask = left_pad(rows, pad=57)  # a real token id as padding: it must not leak anyway
    with use_impl(impl), torch.inference_mode():
        batch = ours(ids, attention_mask=mask)
        for i, r in enumerate(rows):
            alone = ours(torch.tensor([r]))
            torch.testing.assert_close(batch[i, ids.shape[1] - len(r):], alone[0],
                                       rtol=1e-4, atol=1e-4)
        last = ours.next_token_logits(ids, mask)
    with use_impl(impl):
        together = ours.generate(rows, max_new_tokens=5)
        assert together == [ours.generate([r], max_new_tokens=5)[0] for r in rows]
    torch.testing.assert_close(last, batch[:, -1], rtol=1e-5, atol=1e-5)


def test_short_conv_block_matches_reference_with_state_and_mask():
    """The depthwise op the model calls, against the plain-torch definition beside it."""
    from models.depthwise import short_conv_block
    g = torch.Generator().manual_seed(0)
    bcx = torch.randn(2, 7, 3 * 40, generator=g)
    w, bias = torch.randn(40, 1, 3, generator=g), torch.randn(40, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7]).bool()
    s_ref, s_got = torch.randn(2, 40, 2, generator=g), None
    s_got = s_ref.clone()
    ref = short_conv_reference(bcx, w, bias, conv_state=s_ref, mask=mask)
    got = short_conv_block(bcx, w, bias, conv_state=s_got, mask=mask, impl="per_group")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_got, s_ref)


def test_sampling_is_seeded_and_top_k_1_is_greedy(pair):
    _, ours, _ = pair
    rows = [[5, 6, 7], [8, 9, 10, 11]]
    greedy = ours.generate(rows, max_new_tokens=8)
    a = ours.generate(rows, max_new_tokens=8, temperature=1.3, seed=7)
    assert a == ours.generate(rows, max_new_tokens=8, temperature=1.3, seed=7)
    assert a != ours.generate(rows, max_new_tokens=8, temperature=1.3, seed=8)
    assert ours.generate(rows, max_new_tokens=8, temperature=0.9, top_k=1, seed=1) == greedy
    assert ours.generate(rows, max_new_tokens=8, temperature=0.9, top_p=1e-6, seed=1) == greedy
    nucleus = ours.generate(rows, max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=20, seed=2)
    assert all(len(r) == 8 and all(0 <= t < 101 for t in r) for r in nucleus)


def test_a_sampled_row_does_not_depend_on_its_batch(pair):
    """Row i samples with its own generator seeded seed + i: its tokens equal generating its
    prompt alone with that seed, whoever else is in the batch (one shared generator
    interleaved the rows' draws), also when another row stops early."""
    _, ours, _ = pair
    rows = [[5, 6, 7], [8, 9, 10, 11], [12], [40, 41]]
    for kw in (dict(temperature=1.3), dict(temperature=0.8, top_k=30, top_p=0.9)):
        batched = ours.generate(rows, max_new_tokens=9, seed=7, **kw)
        alone = [ours.generate([r], max_new_tokens=9, seed=7 + i, **kw)[0] for i, r in enumerate(rows)]
        assert batched == alone and len({tuple(a) for a in alone}) == len(rows)
        stop = alone[1][2]
        cut = ours.generate(rows, max_new_tokens=9, seed=7, stop_token_ids=[stop], **kw)
        assert cut == [a[:a.index(stop) + 1] if stop in a else a for a in alone]


def test_stop_tokens_stop_each_prompt(pair):
    _, ours, _ = pair
    rows = [[5, 6, 7], [8, 9, 10, 11]]
    greedy = ours.generate(rows, max_new_tokens=8)
    stop = greedy[0][2]
    got = ours.generate(rows, max_new_tokens=8, stop_token_ids=[stop])
    first = greedy[0].index(stop)
    assert got[0] == greedy[0][:first + 1]  # the stop token is the last one kept
    cut = greedy[1].index(stop) + 1 if stop in greedy[1] else 8
    assert got[1] == greedy[1][:cut]
    steps = list(ours.stream_generate(rows, max_new_tokens=8, stop_token_ids=[stop]))
    assert [s[0] for s in steps[first + 1:]] == [None] * (len(steps) - first - 1)
    assert len(steps) == max(first + 1, cut)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda m: m(torch.tensor([[1, 101]])), "vocab_size", id="id-out-of-vocab"),
    pytest.param(lambda m: m(torch.ones(1, 3)), "integer", id="float-ids"),
    pytest.param(lambda m: m(torch.ones(2, 3, dtype=torch.long),
                             torch.tensor([[1, 0, 1], [1, 1, 1]])), "left padding", id="right-pad"),
    pytest.param(lambda m: m(torch.ones(1, 5, dtype=torch.long), cache=m.new_cache(1, 4)),
                 "max_length", id="cache-overflow"),
    pytest.param(lambda m: m(torch.ones(1, 2, dtype=torch.long), cache=m.new_cache(2, 4)),
                 "batch_size", id="cache-batch"),
    pytest.param(lambda m: m.generate([[]]), "non-empty", id="empty-prompt"),
    pytest.param(lambda m: m.stream_generate([[1]], top_k=0), "top_k", id="stream-checks-eagerly"),
    pytest.param(lambda m: m.generate([[1]], temperature=-1), "temperature", id="neg-temperature"),
    pytest.param(lambda m: m.generate([[1]], top_p=0), "top_p", id="top-p-zero"),
    pytest.param(lambda m: m.generate([[1]], stop_token_ids=[500]), "stop_token_ids", id="bad-stop"),
])
def test_bad_inputs_raise_value_error(pair, call, match):
    _, ours, _ = pair
    with pytest.raises(ValueError, match=match):
        call(ours)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", [pytest.param("fused", id="fused"), pytest.param("auto", id="auto"),
                                  pytest.param("per_group", id="per_group")])
def test_cuda_matches_transformers_and_padding(pair, impl):
    hf, _, path = pair
    ours = LFM2ForCausalLM.from_pretrained(path, device="cuda")
    ids = rand_ids(2, 11, seed=1)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    rows = [ids[0, :4].tolist(), ids[1].tolist()]
    pids, mask = left_pad(rows)
    with use_impl(impl), torch.inference_mode():
        torch.testing.assert_close(ours(ids.cuda()).cpu(), ref, rtol=1e-3, atol=1e-3)
        padded = ours(pids.cuda(), attention_mask=mask.cuda()).cpu()
        torch.testing.assert_close(padded[0, -4:], ref[0, :4], rtol=1e-3, atol=1e-3)
        cache = ours.new_cache(2, 12)
        steps = [ours(ids[:, :6].cuda(), cache=cache)] + \
                [ours(ids[:, t:t + 1].cuda(), cache=cache) for t in range(6, 11)]
        torch.testing.assert_close(torch.cat(steps, 1).cpu(), ref, rtol=1e-3, atol=1e-3)
    with use_impl(impl):
        assert ours.generate(rows, max_new_tokens=6) == \
            [ours.generate([r], max_new_tokens=6)[0] for r in rows]
