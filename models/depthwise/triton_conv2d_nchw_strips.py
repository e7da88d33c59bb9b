"""Depthwise 3x3 conv2d on NCHW inputs (W the unit-stride dim), each thread computing a strip of
VEC (4, or 8 in 2-byte dtypes) neighbouring outputs of one row from aligned vector loads of its
input row.

Why: the generic NCHW kernel (triton_conv2d._dw_conv2d_nchw_kernel) loads each tap as a window
shifted by one element, which cannot be proven aligned: of its 37 loads for 4 outputs, 34 are
4-byte scalars (benchmarks/results/ptx-sm90-triton3.6.0.md, mbv2-8x96@112-nchw-f32). A scalar
load of a warp whose threads each hold 4 neighbouring outputs touches 4 cache lines, as a 16-byte
load does, so in L1 wavefronts it costs a vector load for a quarter of the data: ~150 wavefronts
per 128 outputs, enough to hold a batch-32 MobileNetV2 layer well under the copy ceiling.
Here each tap row is a 3-tap conv1d strip along W (triton_vectors.row_taps): the aligned
4-element vectors covering the columns a strip's outputs read are loaded once each (3 at stride 1
and 2: the one(s) the strip starts from and the neighbours holding its edge columns) and the taps
picked from them in registers: 3 loads a row instead of 12, each a 16-byte vector in float32.
In bfloat16 / float16, strips of 8 from 8-element vectors where the rows allow: 16 bytes a load.

Scope (triton_conv2d's launcher checks it, `strip_width`): KW == 3, DW == 1, stride 1 or 2 along
W, left padding 0 or 1, W and W_OUT multiples of VEC with W_OUT * SW <= W (a vector is wholly
inside the row or wholly outside: one mask per vector), and x's batch, channel and row strides
multiples of VEC (so a row's vectors start aligned: stated to the compiler by rounding them,
`triton_vectors.mult`). Any KH, DH, stride along H, top padding and channel multiplier. Tile:
[BLOCK_C channels, BLOCK_G strips, VEC outputs]. Same argument list as the generic kernel, with
PAD_L a constexpr (which columns a tap reads), plus VEC.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .triton_launch import cdiv     # plain ints: Triton 3.9's triton.cdiv costs ~1.7 us a host call
from . import triton_vectors
from .triton_vectors import join_strip, mult, row_taps


@triton.jit(do_not_specialize=["SIZE_CLASS"])
def _dw_conv2d_nchw_strip_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    H, W, W_OUT, P_OUT, C_OUT,
    SIZE_CLASS,                  # size_class(B * P_OUT): an autotune key, unused in the body
    sx_b, sx_c, sx_h, sx_w, sw_c, sw_h, sw_w, so_b, so_c, so_h, so_w,
    PAD_T, PAD_L: tl.constexpr,
    M: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    VEC: tl.constexpr,           # outputs per strip, elements per vector: 4, or 8 in 2-byte dtypes (strip_width)
    BLOCK_C: tl.constexpr, BLOCK_G: tl.constexpr,
):
    tl.static_assert(KW == 3 and DW == 1, "NCHW strip kernel: 3 taps along W, no dilation along W")
    tl.static_assert(SW == 1 or SW == 2, "NCHW strip kernel: stride 1 or 2 along W")
    tl.static_assert(PAD_L == 0 or PAD_L == 1, "NCHW strip kernel: left padding 0 or 1")
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    groups_w = W_OUT // VEC                            # strips per output row (W_OUT % VEC == 0)
    offs_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)   # [BLOCK_G] strip index: oh * groups_w + strip col
    oh = offs_g // groups_w
    ow0 = (offs_g % groups_w) * VEC                    # [BLOCK_G] first output column (a multiple of VEC)
    mask_g = oh * W_OUT < P_OUT                        # oh < H_OUT
    offs_o = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)   # [BLOCK_C] output channels
    mask_o = offs_o < C_OUT
    x_base = x_ptr + pid_b * mult(sx_b, VEC) + (offs_o // M).to(tl.int64) * mult(sx_c, VEC)   # [BLOCK_C]
    a = ow0 * SW                                       # [BLOCK_G] input column of output ow0's tap 0 + PAD_L
    o0 = tl.zeros([BLOCK_C, BLOCK_G], dtype=ACC_DTYPE)
    o1, o2, o3, o4, o5, o6, o7 = o0, o0, o0, o0, o0, o0, o0   # (o4..o7 unused at VEC 4)
    for p in tl.static_range(KH):                      # each tap row: a 3-tap conv1d strip along W
        ih = oh * SH - PAD_T + p * DH
        ok = mask_o[:, None] & (mask_g & (ih >= 0) & (ih < H))[None, :]            # [BLOCK_C, BLOCK_G]
        row_ptr = x_base[:, None] + (ih * mult(sx_h, VEC))[None, :]                # [BLOCK_C, BLOCK_G]
        o0, o1, o2, o3, o4, o5, o6, o7 = row_taps(row_ptr, a, ok, W, w_ptr + offs_o * sw_c + p * sw_h, sw_w, mask_o,
                                                  o0, o1, o2, o3, o4, o5, o6, o7, 3, SW, PAD_L, ACC_DTYPE, VEC)
    out = join_strip(o0, o1, o2, o3, o4, o5, o6, o7, VEC)   # [BLOCK_C, BLOCK_G, VEC] columns ow0 .. ow0 + VEC - 1
    if HAS_BIAS:
        out += tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(ACC_DTYPE)[:, None, None]
    out_ptrs = (out_ptr + pid_b * mult(so_b, VEC) + offs_o[:, None].to(tl.int64) * mult(so_c, VEC)
                + (oh * mult(so_h, VEC) + ow0)[None, :])[:, :, None] + tl.arange(0, VEC)[None, None, :]
    m = (mask_o[:, None] & mask_g[None, :])[:, :, None]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=m)


def _launch_grid(B: int, C_out: int, H_out: int, W_out: int, vec: int):
    """The NCHW strip kernel's grid for triton_conv2d's launcher: (programs over strips of `vec`
    outputs, channel blocks, batch), given the autotune config's meta."""
    return lambda meta: (cdiv(H_out * (W_out // vec), meta["BLOCK_G"]), cdiv(C_out, meta["BLOCK_C"]), B)


def strip_width(x_strides: tuple, out_strides: tuple, KW: int, sw: int, dw: int, left: int, W: int, W_out: int,
                element_size: int) -> int:
    """Outputs per strip (VEC) if the NCHW strip kernel covers this launch (its scope in the module
    docstring: 3 taps along W without dilation, stride 1 or 2, left padding 0 or 1, whole strips
    inside a row of whole vectors, W unit-stride and the other strides of x and the output
    multiples of VEC), else 0: 8 in 2-byte dtypes where the row allows it (triton_vectors.WIDE_HALF),
    else 4."""
    sx_b, sx_c, sx_h, sx_w = x_strides
    so_b, so_c, so_h, so_w = out_strides
    if not (KW == 3 and dw == 1 and sw in (1, 2) and left in (0, 1) and W_out * sw <= W and sx_w == 1 and so_w == 1):
        return 0
    for vec in ((8, 4) if element_size == 2 and triton_vectors.WIDE_HALF else (4,)):
        if W % vec == 0 and W_out % vec == 0 and all(s % vec == 0 for s in (sx_b, sx_c, sx_h, so_b, so_c, so_h)):
            return vec
    return 0
