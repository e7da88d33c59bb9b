"""Depthwise conv1d on (B, C, L) inputs with L unit-stride, each thread computing a strip of VEC
(4, or 8 in 2-byte dtypes) neighbouring outputs of a row from aligned vector loads of the input,
the taps picked in registers.

Why: the generic conv1d kernel (triton_conv1d._dw_conv1d_kernel) loads tap k as the row shifted
by k - PAD_LEFT, which is 16-byte aligned for one tap in four: at K=4 causal, 11 loads for 4
outputs (1 x 16 B, 2 x 8 B, 8 x 4 B; benchmarks/results/ptx-sm90-triton3.6.0.md). Whatever its
width, a load of a warp whose threads hold 4 neighbouring outputs touches the same 4 cache lines,
so L1 serves 44 wavefronts per 128 outputs where the bytes need 8; at K=7 (LFM3) 18 loads, 72
wavefronts. On the H200 the K=4 row reached 79% of the copy ceiling and LFM3's K=7 rows 53%.
Here a strip's inputs (output positions a .. a+3 read a - PAD_LEFT .. a + 3 - PAD_LEFT + K - 1)
come from the aligned 4-element vectors covering them, the taps picked in registers
(triton_vectors.row_taps, which the NCHW strip kernel runs per tap row): 2 loads at K=4 causal,
3 at K=7. In bfloat16 / float16, strips of 8 from 8-element vectors: 16 bytes a load, not 8.

Scope (triton_conv1d's launcher checks it, `strip_width`): stride 1, dilation 1, K <= MAX_TAPS
and PAD_LEFT <= MAX_PAD (the unrolled vectors x taps stay small), L and L_OUT multiples of VEC (a
vector is wholly inside the row or wholly outside: one mask per vector), L unit-stride and the
batch and channel strides of x and the output multiples of VEC (vectors VEC-element aligned:
stated to the compiler by rounding them, `triton_vectors.mult`). Any channel multiplier, right
padding, bias, SiLU.
Tile: [BLOCK_C channels, BLOCK_G strips, VEC outputs]. Same argument list as the generic kernel,
BLOCK_G in place of BLOCK_L, plus VEC.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .triton_launch import cdiv     # plain ints: Triton 3.9's triton.cdiv costs ~1.7 us a host call
from . import triton_vectors
from .triton_vectors import join_strip, mult, row_taps

MAX_TAPS = 9       # K: every LFM2 (3) / LFM3 (7) / Mamba-style (4) short conv; conformer's 31 stays generic
MAX_PAD = 8        # PAD_LEFT: causal up to K = 9


@triton.jit(do_not_specialize=["SIZE_CLASS"])
def _dw_conv1d_strip_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    L, L_OUT, C_OUT,
    SIZE_CLASS,                  # triton_autotune.size_class(B * L_OUT): an autotune key, unused in the body
    sx_b, sx_c, sx_l,            # x strides (elements; sx_l == 1)
    sw_c, sw_k,                  # weight (C_OUT, 1, K) strides
    so_b, so_c, so_l,            # out strides (so_l == 1)
    PAD_LEFT: tl.constexpr,
    M: tl.constexpr, K: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    X_CHANNELS_INNER: tl.constexpr,
    VEC: tl.constexpr,           # outputs per strip, elements per vector: 4, or 8 in 2-byte dtypes (strip_width)
    BLOCK_C: tl.constexpr, BLOCK_G: tl.constexpr,
):
    tl.static_assert(STRIDE == 1 and DILATION == 1, "conv1d strip kernel: stride 1, dilation 1")
    tl.static_assert(not X_CHANNELS_INNER, "conv1d strip kernel: L unit-stride")
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)   # [BLOCK_G] strips of the row
    a = offs_g * VEC                                   # [BLOCK_G] first output position (a multiple of VEC)
    mask_g = a < L_OUT                                 # whole strips: L_OUT % VEC == 0
    offs_o = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)   # [BLOCK_C] output channels
    mask_o = offs_o < C_OUT
    row = x_ptr + pid_b * mult(sx_b, VEC) + (offs_o // M).to(tl.int64) * mult(sx_c, VEC)   # [BLOCK_C]
    z = tl.zeros([BLOCK_C, BLOCK_G], dtype=ACC_DTYPE)
    ok = mask_o[:, None] & mask_g[None, :]             # [BLOCK_C, BLOCK_G]
    o0, o1, o2, o3, o4, o5, o6, o7 = row_taps(row[:, None], a, ok, L, w_ptr + offs_o * sw_c, sw_k, mask_o,
                                              z, z, z, z, z, z, z, z, K, 1, PAD_LEFT, ACC_DTYPE, VEC)
    out = join_strip(o0, o1, o2, o3, o4, o5, o6, o7, VEC)   # [BLOCK_C, BLOCK_G, VEC] outputs a .. a + VEC - 1
    if HAS_BIAS:
        out += tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(ACC_DTYPE)[:, None, None]
    if ACTIVATION == "silu":
        out = out * tl.sigmoid(out)
    out_ptrs = ((out_ptr + pid_b * mult(so_b, VEC) + offs_o[:, None].to(tl.int64) * mult(so_c, VEC)
                 + a[None, :])[:, :, None] + tl.arange(0, VEC)[None, None, :])
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=ok[:, :, None])


def _launch_grid(B: int, C_out: int, L_out: int, vec: int):
    """The conv1d strip kernel's grid for triton_conv1d's launcher: (programs over strips of `vec`
    outputs, channel blocks, batch), given the autotune config's meta."""
    return lambda meta: (cdiv(L_out // vec, meta["BLOCK_G"]), cdiv(C_out, meta["BLOCK_C"]), B)


def strip_width(x_strides: tuple, out_strides: tuple, K: int, stride: int, dilation: int, pad_left: int,
                L: int, L_out: int, element_size: int) -> int:
    """Outputs per strip (VEC) if the conv1d strip kernel covers this launch (its scope in the
    module docstring), else 0: 8 in 2-byte dtypes where L, L_out and the strides allow it
    (triton_vectors.WIDE_HALF), else 4."""
    sx_b, sx_c, sx_l = x_strides
    so_b, so_c, so_l = out_strides
    if not (stride == 1 and dilation == 1 and K <= MAX_TAPS and 0 <= pad_left <= MAX_PAD and L_out > 0
            and sx_l == 1 and so_l == 1):
        return 0
    for vec in ((8, 4) if element_size == 2 and triton_vectors.WIDE_HALF else (4,)):
        if L % vec == 0 and L_out % vec == 0 and all(s % vec == 0 for s in (sx_b, sx_c, so_b, so_c)):
            return vec
    return 0
