"""LFM2's gated short-conv block and the decode step: the fused one-launch kernels (block and
decode step) held to a loop-over-taps float64 definition written here (independent of
F.conv1d and of every impl): state carry, masks, chunked prefill, L < K-1. The public ops for
every impl are test_short_conv_ops.py's. Shapes are tiny: the fused kernels run in Triton's
interpreter without CUDA.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fused_common import DEV, DTYPES, TOL, needs_fused
from models.depthwise import fused


def rand(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=DEV, dtype=dtype)


def check(out, ref, dtype):
    atol, rtol = TOL[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), ref.double().cpu(), atol=atol, rtol=rtol)


# ------------------------------------------------------------------ fused short-conv block
def ref_block(bcx, w, b, state, mask):
    """Loop-over-taps definition in float64 -> (y (B, L, C), new_state (B, C, K-1))."""
    B, L, C3 = bcx.shape
    C, K = C3 // 3, w.shape[-1]
    bb, cc, xx = bcx.double().split(C, dim=-1)                    # each (B, L, C)
    bx = bb * xx
    if mask is not None:
        bx = bx * (mask != 0).double()[:, :, None]
    prev = state.double().transpose(1, 2) if state is not None else bx.new_zeros(B, K - 1, C)
    ext = torch.cat([prev, bx], dim=1)                             # (B, K-1+L, C)
    acc = sum(w.double()[:, 0, k] * ext[:, k:k + L] for k in range(K))
    if b is not None:
        acc = acc + b.double()
    return cc * acc, ext[:, L:].transpose(1, 2)


def block_inputs(B, L, C, K, dtype=torch.float32, seed=0, strided=True):
    g = torch.Generator().manual_seed(seed)
    # a slice of a wider in_proj output: rows not contiguous in the last dim's extent
    bcx = rand(B, L, 3 * C + 5, dtype=dtype, gen=g)[:, :, 2:3 * C + 2] if strided else rand(B, L, 3 * C, dtype=dtype, gen=g)
    return bcx, rand(C, 1, K, dtype=dtype, gen=g), rand(C, dtype=dtype, gen=g), rand(B, C, K - 1, dtype=dtype, gen=g)


#        B, L, C, K, with state, with mask, bias
BLOCK = [
    pytest.param(2, 37, 11, 3, True, True, True, id="state_mask"),
    pytest.param(1, 40, 24, 4, False, False, True, id="no_state"),
    pytest.param(2, 19, 7, 4, True, False, False, id="state_nobias"),
    pytest.param(3, 1, 5, 4, True, True, True, id="single_token"),
    pytest.param(2, 2, 9, 5, True, False, True, id="L_lt_K-1"),
    pytest.param(1, 16, 6, 9, True, True, True, id="k9_tile_edge"),
    pytest.param(2, 6, 4, 1, True, False, True, id="k1"),
]


@pytest.mark.fused
@needs_fused
@pytest.mark.parametrize("B,L,C,K,has_state,has_mask,bias", BLOCK)
def test_block_matches_reference(B, L, C, K, has_state, has_mask, bias):
    bcx, w, b, state = block_inputs(B, L, C, K, seed=L * K)
    b = b if bias else None
    state = state if has_state else None
    mask = (torch.rand(B, L, generator=torch.Generator().manual_seed(L)) > 0.3).to(DEV) if has_mask else None
    y_ref, s_ref = ref_block(bcx, w, b, state, mask)
    y = fused.short_conv_block(bcx, w, b, state, mask)
    assert y.shape == (B, L, C) and y.is_contiguous()
    check(y, y_ref, torch.float32)
    if has_state:
        check(state, s_ref, torch.float32)


@pytest.mark.fused
@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
def test_block_dtypes(dtype):
    bcx, w, b, state = block_inputs(2, 21, 10, 4, dtype=dtype, seed=7)
    y_ref, s_ref = ref_block(bcx, w, b, state, None)
    check(fused.short_conv_block(bcx, w, b, state, None), y_ref, dtype)
    check(state, s_ref, dtype)


@pytest.mark.fused
@needs_fused
@pytest.mark.parametrize("split", [pytest.param(1, id="1+rest"), pytest.param(17, id="17+rest"),
                                   pytest.param(38, id="rest+1")])
def test_block_chunked_prefill_equals_whole(split):
    """Prefill in two chunks carrying conv_state == prefill at once (state and outputs)."""
    B, L, C, K = 2, 39, 13, 4
    bcx, w, b, _ = block_inputs(B, L, C, K, seed=11)
    mask = torch.ones(B, L, dtype=torch.bool, device=DEV)
    mask[1, :5] = False                                           # left padding in row 1
    whole_state = torch.zeros(B, C, K - 1, device=DEV)
    whole = fused.short_conv_block(bcx, w, b, whole_state, mask)
    state = torch.zeros(B, C, K - 1, device=DEV)
    parts = [fused.short_conv_block(bcx[:, :split], w, b, state, mask[:, :split]),
             fused.short_conv_block(bcx[:, split:], w, b, state, mask[:, split:])]
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(state, whole_state, atol=0, rtol=0)


@pytest.mark.fused
@needs_fused
def test_block_decode_tokens_equal_prefill():
    """Token-by-token (L=1) through the block == one prefill; also == the decode-step kernel."""
    B, L, C, K = 2, 8, 6, 3
    bcx, w, b, _ = block_inputs(B, L, C, K, seed=13, strided=False)
    whole = fused.short_conv_block(bcx, w, b, torch.zeros(B, C, K - 1, device=DEV), None)
    state, dstate = torch.zeros(B, C, K - 1, device=DEV), torch.zeros(B, C, K - 1, device=DEV)
    steps = [fused.short_conv_block(bcx[:, t:t + 1], w, b, state, None) for t in range(L)]
    torch.testing.assert_close(torch.cat(steps, 1), whole, atol=1e-6, rtol=1e-6)
    bb, cc, xx = bcx.split(C, dim=-1)
    dec = [cc[:, t] * fused.conv1d_decode_step(bb[:, t] * xx[:, t], dstate, w, b) for t in range(L)]
    torch.testing.assert_close(torch.stack(dec, 1), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dstate, state, atol=1e-6, rtol=1e-6)


@pytest.mark.fused
@needs_fused
@settings(max_examples=15, deadline=None, derandomize=True)
@given(B=st.integers(1, 3), L=st.integers(1, 40), C=st.integers(1, 20), K=st.integers(1, 6),
       split=st.integers(0, 40), masked=st.booleans(), bias=st.booleans())
def test_block_random_shapes_two_chunks(B, L, C, K, split, masked, bias):
    """Random block shapes, prefilled in two chunks [0, split) + [split, L) carrying the state."""
    split = min(split, L)
    bcx, w, b, state = block_inputs(B, L, C, K, seed=L * 31 + C)
    b = b if bias else None
    mask = (torch.rand(B, L, generator=torch.Generator().manual_seed(K)) > 0.25).to(DEV) if masked else None
    y_ref, s_ref = ref_block(bcx, w, b, state, mask)
    parts = [fused.short_conv_block(bcx[:, lo:hi], w, b, state, None if mask is None else mask[:, lo:hi])
             for lo, hi in ((0, split), (split, L))]
    check(torch.cat(parts, 1), y_ref, torch.float32)
    check(state, s_ref, torch.float32)


# ------------------------------------------------------------------ decode step
@pytest.mark.fused
@needs_fused
@pytest.mark.parametrize("K,bias,act", [
    pytest.param(4, True, None, id="k4_bias"),
    pytest.param(3, False, "silu", id="k3_silu"),
    pytest.param(2, True, "silu", id="k2"),
    pytest.param(1, True, None, id="k1_empty_state"),
])
def test_decode_steps_equal_causal_conv(K, bias, act):
    g = torch.Generator().manual_seed(K)
    B, C, T = 2, 19, 6
    x, w = rand(B, C, T, gen=g), rand(C, 1, K, gen=g)
    b = rand(C, gen=g) if bias else None
    state = torch.zeros(B, C, K - 1, device=DEV)
    outs = [fused.conv1d_decode_step(x[:, :, t], state, w, b, act) for t in range(T)]
    xp = F.pad(x.double(), (K - 1, 0))                      # full causal conv, float64
    ref = sum(w.double()[:, 0, k, None] * xp[:, :, k:k + T] for k in range(K))
    ref = ref + (b.double()[:, None] if bias else 0)
    check(torch.stack(outs, -1), F.silu(ref) if act else ref, torch.float32)
    check(state, F.pad(x.double(), (K - 1, 0))[:, :, T:], torch.float32)   # last K-1 inputs


@pytest.mark.fused
@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_dtypes_strided_state(dtype):
    g = torch.Generator().manual_seed(5)
    B, C, K = 3, 10, 4
    cache = rand(B, C, K + 2, dtype=dtype, gen=g)
    state = cache[:, :, 1:K]                                  # (B, C, K-1) view into a bigger cache
    before = cache.clone()
    x_new, w, b = rand(B, C, dtype=dtype, gen=g), rand(C, 1, K, dtype=dtype, gen=g), rand(C, dtype=dtype, gen=g)
    window = torch.cat([state.double(), x_new.double()[:, :, None]], -1)
    out = fused.conv1d_decode_step(x_new.t().contiguous().t(), state, w, b, "silu")   # strided x_new
    check(out, F.silu((window * w.double()[:, 0]).sum(-1) + b.double()), dtype)
    assert torch.equal(state, window[:, :, 1:].to(dtype))
    assert torch.equal(cache[:, :, 0], before[:, :, 0]) and torch.equal(cache[:, :, K:], before[:, :, K:])
