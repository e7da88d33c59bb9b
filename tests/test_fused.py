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
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fused_common import DEV, DTYPES, TOL, needs_fused
from models.depthwise import fused

pytestmark = pytest.mark.fused


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


@needs_fused
@settings(max_examples=20, deadline=None, derandomize=True)
@given(B=st.integers(1, 3), C=st.integers(1, 20), m=st.integers(1, 2), L=st.integers(1, 40),
       K=st.integers(1, 6), stride=st.integers(1, 3), dilation=st.integers(1, 3),
       left=st.integers(0, 6), right=st.integers(0, 6), bias=st.booleans(), silu=st.booleans())
def test_conv1d_random_shapes(B, C, m, L, K, stride, dilation, left, right, bias, silu):
    assume(L + left + right >= dilation * (K - 1) + 1)          # at least one output
    g = torch.Generator().manual_seed(L * 7 + K)
    x, w = rand(B, C, L, gen=g), rand(C * m, 1, K, gen=g)
    b = rand(C * m, gen=g) if bias else None
    act = "silu" if silu else None
    out = fused.conv1d(x, w, b, stride, (left, right), dilation, act)
    check(out, ref_conv1d(x, w, b, stride, (left, right), dilation, act), torch.float32)


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


@needs_fused
@settings(max_examples=12, deadline=None, derandomize=True)
@given(C=st.integers(1, 12), H=st.integers(1, 9), W=st.integers(1, 9), kh=st.integers(1, 4),
       kw=st.integers(1, 4), s=st.integers(1, 2), d=st.integers(1, 2), p=st.integers(0, 2),
       channels_last=st.booleans())
def test_conv2d_random_shapes(C, H, W, kh, kw, s, d, p, channels_last):
    assume(H + 2 * p >= d * (kh - 1) + 1 and W + 2 * p >= d * (kw - 1) + 1)
    g = torch.Generator().manual_seed(H * 13 + W)
    x, w, b = rand(2, C, H, W, gen=g), rand(C, 1, kh, kw, gen=g), rand(C, gen=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    out = fused.conv2d(x, w, b, (s, s), (p, p, p, p), (d, d))
    check(out, ref_conv2d(x, w, b, (s, s), (p, p, p, p), (d, d)), torch.float32)



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


COMPILE_ALL = """
    import inspect, triton, triton.language as tl
    from triton.compiler import ASTSource
    from triton.backends.compiler import GPUTarget
    from triton.runtime import Autotuner
    if "constexprs" not in inspect.signature(ASTSource).parameters:
        raise SystemExit(42)                  # older Triton: another ASTSource API
    from models.depthwise import triton_conv1d as c1, triton_conv2d as c2, triton_decode as dd
    from models.depthwise import triton_short_conv as sc

    def build(kernel, ptrs, consts, num_warps=4):
        fn = kernel.fn if isinstance(kernel, Autotuner) else kernel
        sig = {n: ptrs.get(n, "constexpr" if n in consts else "i32") for n in fn.arg_names}
        triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": num_warps})

    P = dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "out_ptr", "s_ptr", "bcx_ptr", "y_ptr"], "*bf16")
    P["m_ptr"] = "*u8"
    f32 = tl.float32
    for cfg in c1._CONFIGS:
        build(c1._dw_conv1d_kernel, P, dict(M=2, K=4, STRIDE=1, DILATION=1, HAS_BIAS=True, ACTIVATION="silu",
              ACC_DTYPE=f32, X_CHANNELS_INNER=True, **cfg.kwargs), cfg.num_warps)
    for kernel, cfgs in [(c2._dw_conv2d_nchw_kernel, c2._NCHW_CONFIGS), (c2._dw_conv2d_nhwc_kernel, c2._NHWC_CONFIGS)]:
        for cfg in cfgs:
            build(kernel, P, dict(M=1, KH=3, KW=3, SH=2, SW=2, DH=1, DW=1, HAS_BIAS=True, ACC_DTYPE=f32,
                  **cfg.kwargs), cfg.num_warps)
    build(dd._dw_decode_kernel, P, dict(K=4, BLOCK_K=4, HAS_BIAS=True, ACTIVATION="silu", ACC_DTYPE=f32, BLOCK_C=256))
    for state, mask in [(True, True), (False, False)]:
        build(sc._short_conv_kernel, P, dict(K=4, HAS_BIAS=True, HAS_STATE=state, HAS_MASK=mask, ACC_DTYPE=f32,
              BLOCK_L=32, BLOCK_C=64, BLOCK_S=4))
    print("ok")
"""


def test_kernels_compile_for_sm90():
    """The interpreter does not type-check like the compiler: compile every GPU config for
    sm_90 (no GPU needed; Triton's own front end and bundled ptxas)."""
    pytest.importorskip("triton")
    proc = _run_isolated(COMPILE_ALL)
    if proc.returncode == 42:
        pytest.skip("this Triton's ASTSource API differs; compile check needs Triton >= 3.3")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or fused.interpreting(), reason="needs CUDA")
def test_one_cuda_launch_per_call():
    from torch.profiler import ProfilerActivity, profile
    x, w = torch.randn(2, 64, 100, device="cuda"), torch.randn(64, 1, 4, device="cuda")
    bcx, state = torch.randn(2, 100, 192, device="cuda"), torch.zeros(2, 64, 3, device="cuda")
    x2 = torch.randn(2, 64, 9, 9, device="cuda").to(memory_format=torch.channels_last)
    w2 = torch.randn(64, 1, 3, 3, device="cuda")
    calls = [lambda: fused.conv1d(x, w, None, 1, (3, 0), 1, "silu"),
             lambda: fused.conv2d(x2, w2, None, (1, 1), (1, 1, 1, 1), (1, 1)),
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
