"""Depthwise 3x3 conv2d on channels-inner (NHWC) inputs, each thread computing a strip of
OUT_W = 4 neighbouring output pixels of one row, so the input columns the strip's taps share are
loaded once and reused from registers.

Why: the per-pixel NHWC kernel (triton_conv2d._dw_conv2d_nhwc_kernel) loads every tap of every
output pixel, 9 tile loads per output; its neighbours' loads hit L1, but on an H200 that layer
ran 1.1-1.8x behind cuDNN's NHWC depthwise kernel in device time (benchmarks/results/
h200-2026-12-04-2). A strip of 4 outputs at stride 1 reads 6 input columns per tap row (18 loads
for 4 outputs: 4.5 each); at stride 2, 9 columns (27 loads: 6.75 each).

Tall strips (ROWS=2 or 4, tried by the tuner on big layers: triton_autotune.tall_strip_rows):
ROWS x 4 outputs a thread, the input rows its output rows share loaded once too: 4 input rows for
2 output rows at stride 1 (24 loads for 8 outputs: 3 each), 6 for 4 (36 for 16: 2.25 each), 5 /
9 at stride 2. Why: on the H200 the stride-1 batch-32 layers held at 67-73% of the copy ceiling
with 1-row strips, cuDNN at 66-69%, while every input row reached the SMs 3 times through L2
(once per output row reading it): L2-to-SM traffic, not DRAM, is the likely limit there, and
tall strips cut it by a third (ROWS=2) or a half (ROWS=4).

Scope: KW == 3, DW == 1 (every depthwise layer of MobileNetV2 and most 3x3 models), any KH, DH,
stride (1 or 2 along W), padding, multiplier. Tile: [BLOCK_Q strips, BLOCK_C channels]; a strip is
(b, oh .. oh + ROWS - 1, ow0 .. ow0 + 3); its outputs past H_OUT or W_OUT are masked. Same
argument list as the per-pixel kernel plus ROWS (a config constexpr, 1 by default): the two are
interchangeable launches.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .triton_launch import cdiv     # plain ints: Triton 3.9's triton.cdiv costs ~1.7 us a host call

OUT_W = 4          # output pixels per strip (the 4-wide unrolled arithmetic below)


@triton.jit
def _col(x_base, row_pix, iw, row_ok, mask_o, W, sx_w):
    """Input column iw ([BLOCK_Q] ints) of the tap row at row_pix ([BLOCK_Q] pixel offsets of
    (ih, 0)): a [BLOCK_Q, BLOCK_C] tile, zeros outside the image."""
    ok = row_ok & (iw >= 0) & (iw < W)
    return tl.load(x_base[None, :] + (row_pix + iw * sx_w)[:, None], mask=ok[:, None] & mask_o[None, :],
                   other=0.0)


@triton.jit
def _row_cols(x_base, row_pix, iw0, row_ok, mask_o, W, sx_w, SW: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """The input columns one input row gives a strip: iw0 .. iw0 + 5 at stride 1 (the last three
    returned again as x6..x8, unused), iw0 .. iw0 + 8 at stride 2; each [BLOCK_Q, BLOCK_C]."""
    x0 = _col(x_base, row_pix, iw0, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    x1 = _col(x_base, row_pix, iw0 + 1, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    x2 = _col(x_base, row_pix, iw0 + 2, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    x3 = _col(x_base, row_pix, iw0 + 3, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    x4 = _col(x_base, row_pix, iw0 + 4, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    x5 = _col(x_base, row_pix, iw0 + 5, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    if SW == 1:
        x6, x7, x8 = x3, x4, x5
    else:
        x6 = _col(x_base, row_pix, iw0 + 6, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
        x7 = _col(x_base, row_pix, iw0 + 7, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
        x8 = _col(x_base, row_pix, iw0 + 8, row_ok, mask_o, W, sx_w).to(ACC_DTYPE)
    return x0, x1, x2, x3, x4, x5, x6, x7, x8


@triton.jit
def _taps(a0, a1, a2, a3, x0, x1, x2, x3, x4, x5, x6, x7, x8, w_row, sw_w, mask_o,
          SW: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """A strip's 4 accumulators plus one tap row: the row's 3 weights ([BLOCK_C] at w_row) times
    the columns each output reads (t, t+1, t+2 at stride 1; 2t, 2t+1, 2t+2 at stride 2). As FMA
    chains: `a += x0 * w0 + x1 * w1 + x2 * w2` compiled to FMUL + 2 FFMA + FADD per output and tap
    row; the chain is 3 FFMA (sm_90: 538 -> 491 SASS per 16 outputs, and 255 -> 156 registers for
    2 vectors a thread at stride 2: benchmarks/results/ptx-sm90-triton3.6.0.md)."""
    w0 = tl.load(w_row, mask=mask_o, other=0.0).to(ACC_DTYPE)[None, :]
    w1 = tl.load(w_row + sw_w, mask=mask_o, other=0.0).to(ACC_DTYPE)[None, :]
    w2 = tl.load(w_row + 2 * sw_w, mask=mask_o, other=0.0).to(ACC_DTYPE)[None, :]
    a0 = tl.fma(x2, w2, tl.fma(x1, w1, tl.fma(x0, w0, a0)))
    if SW == 1:
        a1 = tl.fma(x3, w2, tl.fma(x2, w1, tl.fma(x1, w0, a1)))
        a2 = tl.fma(x4, w2, tl.fma(x3, w1, tl.fma(x2, w0, a2)))
        a3 = tl.fma(x5, w2, tl.fma(x4, w1, tl.fma(x3, w0, a3)))
    else:
        a1 = tl.fma(x4, w2, tl.fma(x3, w1, tl.fma(x2, w0, a1)))
        a2 = tl.fma(x6, w2, tl.fma(x5, w1, tl.fma(x4, w0, a2)))
        a3 = tl.fma(x8, w2, tl.fma(x7, w1, tl.fma(x6, w0, a3)))
    return a0, a1, a2, a3


@triton.jit
def _store_strip(out_row, ow0, so_w, W_OUT, m, a0, a1, a2, a3, bias, HAS_BIAS: tl.constexpr):
    """Store one output row's strip (plus the bias) at out_row ([BLOCK_Q, BLOCK_C] pointers to
    column 0), masking the columns past W_OUT."""
    if HAS_BIAS:
        a0, a1, a2, a3 = a0 + bias, a1 + bias, a2 + bias, a3 + bias
    ty = out_row.dtype.element_ty
    tl.store(out_row + (ow0 * so_w)[:, None], a0.to(ty), mask=m & (ow0 < W_OUT)[:, None])
    tl.store(out_row + ((ow0 + 1) * so_w)[:, None], a1.to(ty), mask=m & (ow0 + 1 < W_OUT)[:, None])
    tl.store(out_row + ((ow0 + 2) * so_w)[:, None], a2.to(ty), mask=m & (ow0 + 2 < W_OUT)[:, None])
    tl.store(out_row + ((ow0 + 3) * so_w)[:, None], a3.to(ty), mask=m & (ow0 + 3 < W_OUT)[:, None])


@triton.jit(do_not_specialize=["SIZE_CLASS"])
def _dw_conv2d_nhwc_strip_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    H, W, W_OUT, P_OUT, C_OUT,
    SIZE_CLASS,                  # size_class(B * P_OUT): an autotune key, unused in the body
    sx_b, sx_c, sx_h, sx_w, sw_c, sw_h, sw_w, so_b, so_c, so_h, so_w,
    PAD_T, PAD_L,
    M: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
    ROWS: tl.constexpr = 1,      # output rows a strip spans (1, 2 or 4): see the module docstring
):
    tl.static_assert(KW == 3, "strip kernel: 3 taps along W")
    tl.static_assert(DW == 1, "strip kernel: no dilation along W")
    tl.static_assert(SW == 1 or SW == 2, "strip kernel: stride 1 or 2 along W")
    tl.static_assert(ROWS == 1 or ROWS == 2 or ROWS == 4, "strip kernel: 1, 2 or 4 output rows a strip")
    pid_q = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    strips_w = tl.cdiv(W_OUT, 4)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)   # [BLOCK_Q] strip index: strip row * strips_w + strip col
    oh = (offs_q // strips_w) * ROWS                   # [BLOCK_Q] the strip's first output row
    ow0 = (offs_q % strips_w) * 4                      # [BLOCK_Q] first output column of the strip
    mask_q = oh * W_OUT < P_OUT                        # oh < H_OUT
    offs_o = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)   # [BLOCK_C] output channels (unit stride)
    mask_o = offs_o < C_OUT
    x_base = x_ptr + pid_b * sx_b + (offs_o // M).to(tl.int64) * sx_c   # [BLOCK_C]
    iw0 = ow0 * SW - PAD_L                             # [BLOCK_Q] input column of output ow0's tap 0
    w_base = w_ptr + offs_o * sw_c                     # [BLOCK_C]
    z = tl.zeros([BLOCK_Q, BLOCK_C], dtype=ACC_DTYPE)
    a0, a1, a2, a3 = z, z, z, z                        # output row oh, columns ow0 .. ow0 + 3
    b0, b1, b2, b3 = z, z, z, z                        # row oh + 1 (ROWS >= 2)
    c0, c1, c2, c3 = z, z, z, z                        # rows oh + 2, oh + 3 (ROWS == 4)
    d0, d1, d2, d3 = z, z, z, z
    # Input row r (oh * SH - PAD_T + r) is tap row (r - j * SH) / DH of output row oh + j: each
    # row the strip's outputs read is loaded once, for every output row reading it.
    for r in tl.static_range((ROWS - 1) * SH + (KH - 1) * DH + 1):
        # (constexprs: output row oh + j reads input row r, as its tap row (r - j * SH) / DH)
        R0 = r % DH == 0 and r // DH < KH
        R1 = ROWS >= 2 and r >= SH and (r - SH) % DH == 0 and (r - SH) // DH < KH
        R2 = ROWS == 4 and r >= 2 * SH and (r - 2 * SH) % DH == 0 and (r - 2 * SH) // DH < KH
        R3 = ROWS == 4 and r >= 3 * SH and (r - 3 * SH) % DH == 0 and (r - 3 * SH) // DH < KH
        if R0 or R1 or R2 or R3:
            ih = oh * SH - PAD_T + r
            row_ok = mask_q & (ih >= 0) & (ih < H)
            x0, x1, x2, x3, x4, x5, x6, x7, x8 = _row_cols(x_base, ih * sx_h, iw0, row_ok, mask_o, W, sx_w,
                                                           SW, ACC_DTYPE)
            if R0:
                a0, a1, a2, a3 = _taps(a0, a1, a2, a3, x0, x1, x2, x3, x4, x5, x6, x7, x8,
                                       w_base + (r // DH) * sw_h, sw_w, mask_o, SW, ACC_DTYPE)
            if R1:
                b0, b1, b2, b3 = _taps(b0, b1, b2, b3, x0, x1, x2, x3, x4, x5, x6, x7, x8,
                                       w_base + ((r - SH) // DH) * sw_h, sw_w, mask_o, SW, ACC_DTYPE)
            if R2:
                c0, c1, c2, c3 = _taps(c0, c1, c2, c3, x0, x1, x2, x3, x4, x5, x6, x7, x8,
                                       w_base + ((r - 2 * SH) // DH) * sw_h, sw_w, mask_o, SW, ACC_DTYPE)
            if R3:
                d0, d1, d2, d3 = _taps(d0, d1, d2, d3, x0, x1, x2, x3, x4, x5, x6, x7, x8,
                                       w_base + ((r - 3 * SH) // DH) * sw_h, sw_w, mask_o, SW, ACC_DTYPE)
    bias = a0
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(ACC_DTYPE)[None, :]
    out_row = out_ptr + pid_b * so_b + offs_o[None, :] * so_c + (oh * so_h).to(tl.int64)[:, None]
    # Row oh + j exists where (oh + j) * W_OUT < P_OUT (H_OUT not a multiple of ROWS: the last strip's
    # rows past H_OUT are masked).
    _store_strip(out_row, ow0, so_w, W_OUT, mask_q[:, None] & mask_o[None, :], a0, a1, a2, a3, bias, HAS_BIAS)
    if ROWS >= 2:
        _store_strip(out_row + so_h, ow0, so_w, W_OUT, ((oh + 1) * W_OUT < P_OUT)[:, None] & mask_o[None, :],
                     b0, b1, b2, b3, bias, HAS_BIAS)
    if ROWS == 4:
        _store_strip(out_row + 2 * so_h, ow0, so_w, W_OUT, ((oh + 2) * W_OUT < P_OUT)[:, None] & mask_o[None, :],
                     c0, c1, c2, c3, bias, HAS_BIAS)
        _store_strip(out_row + 3 * so_h, ow0, so_w, W_OUT, ((oh + 3) * W_OUT < P_OUT)[:, None] & mask_o[None, :],
                     d0, d1, d2, d3, bias, HAS_BIAS)


def _launch_grid(B: int, C_out: int, H_out: int, W_out: int):
    """The strip kernel's grid for triton_conv2d's launcher: (programs over strips, channel
    blocks, batch), given the autotune config's meta."""
    return lambda meta: (strip_programs(meta, H_out, W_out), cdiv(C_out, meta["BLOCK_C"]), B)


def strip_programs(meta: dict, H_out: int, W_out: int) -> int:
    """Programs along grid dim 0: BLOCK_Q strips of ROWS x 4 output pixels each."""
    return cdiv(cdiv(H_out, meta.get("ROWS", 1)) * cdiv(W_out, OUT_W), meta["BLOCK_Q"])
