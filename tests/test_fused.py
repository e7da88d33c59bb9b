"""The fused Triton kernels against independent float64 references.

Without CUDA these run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
which is slow: shapes are tiny and odd-sized (C <= 24, L <= 40) so tile edges are hit.
The reference is the block-diagonal dense weight through groups=1 convs in float64 (the
candle PR's test idea), independent of every depthwise code path. Inputs are rounded to
the tested dtype before the reference sees them, so only the kernel's error is measured.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from models.depthwise import fused

pytestmark = pytest.mark.fused
RUNNABLE = fused.available()
needs_fused = pytest.mark.skipif(not RUNNABLE, reason="needs CUDA or TRITON_INTERPRET=1 with triton")
DEV = "cuda" if torch.cuda.is_available() and not fused.interpreting() else "cpu"
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5),
       torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}   # (atol, rtol)
DTYPES = [pytest.param(d, id=str(d).split(".")[1]) for d in TOL]


def dense_weight(w: torch.Tensor, C: int) -> torch.Tensor:
    """(C*m, 1, *k) depthwise weight -> (C*m, C, *k) block-diagonal dense weight (groups=1)."""
    dense = w.new_zeros((w.shape[0], C, *w.shape[2:]))
    for o in range(w.shape[0]):
        dense[o, o // (w.shape[0] // C)] = w[o, 0]
    return dense


def ref_conv1d(x, w, b, stride, padding, dilation, activation=None):
    x, w = x.double(), w.double()
    out = F.conv1d(F.pad(x, padding), dense_weight(w, x.shape[1]),
                   None if b is None else b.double(), stride=stride, dilation=dilation)
    return F.silu(out) if activation == "silu" else out


def ref_conv2d(x, w, b, stride, padding, dilation):
    t, bo, l, r = padding
    x, w = x.double(), w.double()
    return F.conv2d(F.pad(x, (l, r, t, bo)), dense_weight(w, x.shape[1]),
                    None if b is None else b.double(), stride=stride, dilation=dilation)


def rand(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=DEV, dtype=dtype)


def check(out, ref, dtype):
    atol, rtol = TOL[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), ref.cpu(), atol=atol, rtol=rtol)


# ------------------------------------------------------------------ conv1d
#        B, C, m, L, K, stride, (left, right), dilation, bias, activation
CONV1D = [
    pytest.param(2, 5, 1, 17, 3, 1, (1, 1), 1, True, None, id="same_k3"),
    pytest.param(1, 7, 1, 23, 4, 1, (3, 0), 1, True, "silu", id="causal_silu"),
    pytest.param(2, 6, 1, 29, 3, 2, (2, 1), 2, False, None, id="stride2_dil2_asym"),
    pytest.param(1, 4, 3, 13, 5, 1, (2, 2), 1, False, "silu", id="multiplier3"),
    pytest.param(3, 3, 1, 11, 1, 1, (0, 0), 1, True, None, id="k1"),
    pytest.param(1, 9, 2, 40, 9, 3, (4, 4), 1, True, None, id="k9_stride3_mult2"),
    pytest.param(2, 24, 1, 33, 3, 1, (2, 0), 1, True, None, id="c24_two_tiles"),
    pytest.param(1, 5, 1, 4, 4, 1, (0, 0), 1, True, None, id="lout1"),
]


@needs_fused
@pytest.mark.parametrize("B,C,m,L,K,stride,padding,dilation,bias,act", CONV1D)
def test_conv1d_matches_dense(B, C, m, L, K, stride, padding, dilation, bias, act):
    g = torch.Generator().manual_seed(B * 1000 + C * 10 + K)
    x, w = rand(B, C, L, gen=g), rand(C * m, 1, K, gen=g)
    b = rand(C * m, gen=g) if bias else None
    out = fused.conv1d(x, w, b, stride, padding, dilation, act)
    check(out, ref_conv1d(x, w, b, stride, padding, dilation, act), torch.float32)


@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_dtypes(dtype):
    g = torch.Generator().manual_seed(1)
    x, w, b = rand(2, 11, 31, dtype=dtype, gen=g), rand(11, 1, 4, dtype=dtype, gen=g), rand(11, dtype=dtype, gen=g)
    out = fused.conv1d(x, w, b, 1, (3, 0), 1, "silu")
    check(out, ref_conv1d(x, w, b, 1, (3, 0), 1, "silu"), dtype)


@needs_fused
@pytest.mark.parametrize("layout", [
    pytest.param("transposed_BLC", id="transposed_BLC"),   # LFM2: (B, L, C).transpose(1, 2)
    pytest.param("strided_L", id="strided_L"),             # every other time step
    pytest.param("channel_slice", id="channel_slice"),     # a chunk of a wider tensor
])
def test_conv1d_non_contiguous(layout):
    g = torch.Generator().manual_seed(2)
    B, C, L, K = 2, 10, 21, 3
    if layout == "transposed_BLC":
        x = rand(B, L, C, gen=g).transpose(1, 2)
    elif layout == "strided_L":
        x = rand(B, C, 2 * L, gen=g)[:, :, ::2]
    else:
        x = rand(B, 3 * C, L, gen=g)[:, C:2 * C]
    assert not x.is_contiguous()
    w = rand(C * 2, 1, K, gen=g)[::2]                       # non-contiguous weight too
    out = fused.conv1d(x, w, None, 1, (1, 1), 1)
    check(out, ref_conv1d(x, w, None, 1, (1, 1), 1), torch.float32)


@needs_fused
def test_conv1d_empty_output():
    x, w = rand(2, 3, 2), rand(3, 1, 4)
    assert fused.conv1d(x, w, None, 1, (0, 0), 1).shape == (2, 3, 0)


# ------------------------------------------------------------------ conv2d
#        B, C, m, H, W, (KH, KW), stride, (top, bottom, left, right), dilation, bias
CONV2D = [
    pytest.param(2, 5, 1, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, id="3x3_same"),
    pytest.param(1, 6, 1, 13, 10, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True, id="3x3_stride2"),
    pytest.param(2, 3, 2, 8, 9, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2), False, id="asym_mult2"),
    pytest.param(1, 4, 1, 12, 12, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), True, id="5x5"),
    pytest.param(1, 7, 1, 6, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), True, id="1x1"),
    pytest.param(1, 20, 1, 7, 7, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), False, id="c20_dil2"),
]


@needs_fused
@pytest.mark.parametrize("channels_last", [pytest.param(False, id="nchw"), pytest.param(True, id="channels_last")])
@pytest.mark.parametrize("B,C,m,H,W,k,stride,padding,dilation,bias", CONV2D)
def test_conv2d_matches_dense(B, C, m, H, W, k, stride, padding, dilation, bias, channels_last):
    g = torch.Generator().manual_seed(C * 100 + H)
    x, w = rand(B, C, H, W, gen=g), rand(C * m, 1, *k, gen=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    b = rand(C * m, gen=g) if bias else None
    out = fused.conv2d(x, w, b, stride, padding, dilation)
    check(out, ref_conv2d(x, w, b, stride, padding, dilation), torch.float32)
    # Output in the input's memory format, as PyTorch's conv2d does.
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@needs_fused
@pytest.mark.parametrize("channels_last", [pytest.param(False, id="nchw"), pytest.param(True, id="channels_last")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dtypes(dtype, channels_last):
    g = torch.Generator().manual_seed(3)
    x, w, b = rand(1, 6, 7, 9, dtype=dtype, gen=g), rand(6, 1, 3, 3, dtype=dtype, gen=g), rand(6, dtype=dtype, gen=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    check(fused.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1)), ref_conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1)), dtype)


@needs_fused
def test_conv2d_non_contiguous():
    g = torch.Generator().manual_seed(4)
    x = rand(2, 12, 10, 16, gen=g)[:, 2:8, :, ::2]                      # channel slice, strided W
    nhwc = rand(2, 9, 11, 8, gen=g).permute(0, 3, 1, 2)[:, :, 1:, :]    # NHWC view, cropped H
    w = rand(8, 1, 3, 3, gen=g)
    check(fused.conv2d(x, w[:6], None, (1, 2), (1, 1, 0, 1), (1, 1)),
          ref_conv2d(x, w[:6], None, (1, 2), (1, 1, 0, 1), (1, 1)), torch.float32)
    check(fused.conv2d(nhwc, w, None, (2, 1), (1, 1, 1, 1), (1, 1)),
          ref_conv2d(nhwc, w, None, (2, 1), (1, 1, 1, 1), (1, 1)), torch.float32)


# ------------------------------------------------------------------ decode step
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
    check(torch.stack(outs, -1), ref_conv1d(x, w, b, 1, (K - 1, 0), 1, act), torch.float32)
    check(state, F.pad(x.double(), (K - 1, 0))[:, :, T:], torch.float32)   # last K-1 inputs


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


# ------------------------------------------------------------------ errors without a backend
def _run_isolated(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=os.getcwd(),
                          capture_output=True, text=True, timeout=120)


def test_cpu_without_interpreter_raises_clear_error():
    proc = _run_isolated("""
        import torch
        from models.depthwise import fused
        x, w = torch.randn(1, 4, 8), torch.randn(4, 1, 3)
        calls = [lambda: fused.conv1d(x, w, None, 1, (1, 1), 1),
                 lambda: fused.conv2d(x[..., None], w[..., None], None, (1, 1), (1, 1, 0, 0), (1, 1)),
                 lambda: fused.conv1d_decode_step(x[..., 0], torch.zeros(1, 4, 2), w),
                 lambda: fused.short_conv_block(torch.randn(1, 8, 12), w)]
        for call in calls:
            try:
                call()
            except RuntimeError as e:
                print("ERR", e)
            else:
                print("NO ERROR")
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and all(line == f"ERR {fused.CPU_ERROR}" for line in lines), proc.stdout


def test_import_without_triton():
    proc = _run_isolated("""
        import os, sys, torch
        sys.modules["triton"] = None          # makes `import triton` raise ImportError
        import models.depthwise.fused as fused
        assert not fused.available("cuda")
        os.environ["TRITON_INTERPRET"] = "1"  # past the device check, to the missing triton
        try:
            fused.conv1d(torch.randn(1, 2, 5), torch.randn(2, 1, 3), None, 1, (0, 0), 1)
        except RuntimeError as e:
            print(e)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == fused.TRITON_ERROR, proc.stdout


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


@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
def test_block_dtypes(dtype):
    bcx, w, b, state = block_inputs(2, 21, 10, 4, dtype=dtype, seed=7)
    y_ref, s_ref = ref_block(bcx, w, b, state, None)
    check(fused.short_conv_block(bcx, w, b, state, None), y_ref, dtype)
    check(state, s_ref, dtype)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or fused.interpreting(), reason="needs CUDA")
def test_one_cuda_launch_per_call():
    from torch.profiler import ProfilerActivity, profile
    x, w = torch.randn(2, 64, 100, device="cuda"), torch.randn(64, 1, 4, device="cuda")
    bcx, state = torch.randn(2, 100, 192, device="cuda"), torch.zeros(2, 64, 3, device="cuda")
    calls = [lambda: fused.conv1d(x, w, None, 1, (3, 0), 1, "silu"),
             lambda: fused.conv2d(x[..., :10].reshape(2, 64, 2, 5), w[..., :3].reshape(64, 1, 1, 3),
                                  None, (1, 1), (0, 0, 1, 1), (1, 1)),
             lambda: fused.conv1d_decode_step(x[:, :, 0], state, w),
             lambda: fused.short_conv_block(bcx, w, None, state, None)]
    for call in calls:
        call(), call()                                      # warm up (autotune, compile)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
        assert len(kernels) == 1, [e.name for e in kernels]
