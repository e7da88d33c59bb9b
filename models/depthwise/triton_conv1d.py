"""Depthwise conv1d as one Triton kernel: kernel, launcher, public function.

out[b, o, t] = act(bias[o] + sum_k w[o, k] * x[b, o // M, t*stride - pad_left + k*dilation])

Each program computes a [BLOCK_C, BLOCK_L] tile of output channels x output positions
for one batch row, reading K shifted windows of the input (zeros outside [0, L)).
Strides are passed, so non-contiguous inputs (e.g. LFM2's transposed (B, L, C) views,
where C is the unit-stride dim) need no copy; Triton specialises strides equal to 1,
so its coalescing pass vectorises along whichever dim is contiguous.

Imported lazily by `models.depthwise.fused` (so `import models` works without triton).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .triton_autotune import AUTOTUNE_TIMING, big_layer_configs, launch_tuned, size_class
from . import triton_launch, triton_vectors
from .triton_launch import cdiv, env_switch, keep_plan, plan_key
from .triton_conv1d_strips import _dw_conv1d_strip_kernel, _launch_grid as _strips_grid, strip_width
from .weight_layout import copies, tap_major

# Under the interpreter (CPU tests) every autotune config would be run on every new key:
# keep one small config there so tests stay fast.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if _INTERPRET:
    _CONFIGS, _BIG, _NARROW = [triton.Config({"BLOCK_C": 16, "BLOCK_L": 32}, num_warps=1)], [], []
else:
    # Long time tiles, 8 warps: more bytes in flight per program and less halo re-read
    # ((K-1) / BLOCK_L) on memory-bound (B, C, L) shapes, where an H200 probe had the 4-warp tiles
    # at 76% of the copy ceiling. Tried on big layers only (triton_autotune.big_layer_configs).
    # The 1- and 2-channel tiles (a program reads 2-4 KB contiguous of one or two rows, the next
    # program the next 2-4 KB: the order a flat elementwise kernel streams in; the second run's
    # shortconv-long row had fused at 79% with a 16 x 128 tile, 16 rows of 512 B apart, where
    # torch.compile's flat kernel reached 86%): an untimed lead, the tuner decides; never on (B, L, C)
    # views (X_CHANNELS_INNER), where a 1-2 channel tile has nothing to vectorize along.
    _NARROW = [triton.Config({"BLOCK_C": bc, "BLOCK_L": bl}, num_warps=w) for bc, bl, w in [(1, 1024, 4), (2, 512, 4),
                                                                                          (2, 1024, 8)]]
    _BIG = [triton.Config({"BLOCK_C": bc, "BLOCK_L": bl}, num_warps=8) for bc, bl in [(16, 256), (8, 512)]] + _NARROW
    _CONFIGS = [
        triton.Config({"BLOCK_C": bc, "BLOCK_L": bl}, num_warps=w)
        for bc, bl, w in [(16, 128, 4), (32, 64, 4), (32, 128, 4), (64, 64, 4), (8, 256, 4), (64, 32, 2)]
    ] + _BIG

ACTIVATIONS = (None, "silu")

# The strip kernel (triton_conv1d_strips: VEC outputs a thread from aligned vector loads, VEC 4, or
# 8 in 2-byte dtypes) for the (B, C, L) launches it covers (its `strip_width`: stride 1, dilation 1,
# K <= 9, L a multiple of 4).
# An untimed lead (PTX: 2 vector loads for 4 outputs at K=4 causal where this kernel issues 11):
# on by default so the next GPU run's ops step times it; DWSERVE_CONV1D_STRIPS=0 at import (or
# STRIPS = False: read per launch, plans keyed on it) launches the generic kernel below.
STRIPS = env_switch("DWSERVE_CONV1D_STRIPS")
if _INTERPRET:
    _STRIP_CONFIGS = [triton.Config({"BLOCK_C": 2, "BLOCK_G": 8}, num_warps=1)]
else:
    # One strip a thread (the first three) or four (the last three: along the row, 2 rows x 2, 4
    # rows): with one, a thread has 16 B of unique input in flight (64 warps/SM: 32 KB, against the
    # ~22-25 KB an H200 SM needs) and half its instructions are set-up; four amortize the set-up
    # over 16 outputs (sm_90 ptx report: SASS per output, 28-30 registers). Untimed: the tuner decides.
    _STRIP_CONFIGS = [triton.Config({"BLOCK_C": bc, "BLOCK_G": bg}, num_warps=w)     # BLOCK_G strips of VEC
                      for bc, bg, w in [(1, 128, 4), (2, 64, 4), (8, 16, 4), (1, 512, 4), (2, 256, 4), (4, 64, 2)]]


# Autotune keys, both kernels: what is fixed per model layer (channels, multiplier, taps, stride,
# dilation, which dim of x is unit-stride, the weight's channel stride: 1 when tap-major) and
# B * L_out only by its factor-of-4 size class, so a new request length rarely re-tunes.
_KEY = ["C_OUT", "SIZE_CLASS", "M", "K", "STRIDE", "DILATION", "X_CHANNELS_INNER", "sw_c"]


@triton.autotune(configs=_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": big_layer_configs(_BIG, _NARROW)},
                 **AUTOTUNE_TIMING)
@triton.jit(do_not_specialize=["SIZE_CLASS"])
def _dw_conv1d_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    L, L_OUT, C_OUT,
    SIZE_CLASS,                  # triton_autotune.size_class(B * L_OUT): an autotune key, unused in the body
    sx_b, sx_c, sx_l,            # x strides (elements)
    sw_c, sw_k,                  # weight (C_OUT, 1, K) strides
    so_b, so_c, so_l,            # out strides
    # A compile-time shift per tap (k*DILATION - PAD_LEFT): with L unit-stride, a tap whose shift
    # is a multiple of 4 (or 2) is provably aligned and loads 16 (8) bytes a thread, not 4: the
    # memory-bound (B, C, L) case drops from 60 loads a thread to 40 and 64 registers to 48
    # (ptx-sm90-*.md). A layer's padding is fixed, so this adds a variant per layer at most.
    PAD_LEFT: tl.constexpr,
    M: tl.constexpr, K: tl.constexpr, STRIDE: tl.constexpr, DILATION: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    X_CHANNELS_INNER: tl.constexpr,   # x's C dim is unit-stride (LFM2's (B, L, C) views): tune apart
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_l = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)        # int64: B*C*L may exceed 2**31

    offs_o = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)   # [BLOCK_C] output channels
    offs_t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)   # [BLOCK_L] output positions
    mask_o = offs_o < C_OUT
    mask_t = offs_t < L_OUT
    offs_i = offs_o // M                               # [BLOCK_C] input channel read by each output

    x_base = x_ptr + pid_b * sx_b + offs_i[:, None].to(tl.int64) * sx_c   # [BLOCK_C, 1]
    acc = tl.zeros([BLOCK_C, BLOCK_L], dtype=ACC_DTYPE)
    for k in tl.static_range(K):
        pos = offs_t * STRIDE + (k * DILATION - PAD_LEFT)   # [BLOCK_L]; the shift a compile-time int
        valid = mask_o[:, None] & (mask_t & (pos >= 0) & (pos < L))[None, :]   # [BLOCK_C, BLOCK_L]
        xv = tl.load(x_base + pos[None, :] * sx_l, mask=valid, other=0.0)      # [BLOCK_C, BLOCK_L]
        wv = tl.load(w_ptr + offs_o * sw_c + k * sw_k, mask=mask_o, other=0.0)  # [BLOCK_C]
        acc += wv.to(ACC_DTYPE)[:, None] * xv.to(ACC_DTYPE)
    if HAS_BIAS:
        bv = tl.load(b_ptr + offs_o, mask=mask_o, other=0.0)                   # [BLOCK_C]
        acc += bv.to(ACC_DTYPE)[:, None]
    if ACTIVATION == "silu":
        acc = acc * tl.sigmoid(acc)
    out_ptrs = out_ptr + pid_b * so_b + offs_o[:, None].to(tl.int64) * so_c + offs_t[None, :] * so_l
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_t[None, :])


# (VEC in its key too: 4- and 8-wide strips of one layer tune apart)
_dw_conv1d_strip_tuned = triton.autotune(configs=_STRIP_CONFIGS, key=_KEY + ["VEC"], **AUTOTUNE_TIMING)(
    _dw_conv1d_strip_kernel)


def _acc_dtype(dtype: torch.dtype):
    """fp32 accumulation for fp32/fp16/bf16; fp64 inputs keep fp64."""
    return tl.float64 if dtype == torch.float64 else tl.float32


_PLANS: dict = {}    # plan_key(...) -> (triton_launch.Plan, output shape, None: contiguous, weight made tap-major?)


def _launch_conv1d(x, weight, bias, stride, pad_left, pad_right, dilation, activation, key=None):
    """Allocate the (B, C*m, L_out) output and launch one program per (L tile, C tile, b);
    keep the launch's Plan under `key` (dw_conv1d's plan_key) when it went direct."""
    B, C, L = x.shape
    C_out, _, K = weight.shape
    L_out = (L + pad_left + pad_right - dilation * (K - 1) - 1) // stride + 1
    out = x.new_empty((B, C_out, max(L_out, 0)))              # new_empty: half the host time of torch.empty
    if out.numel() == 0:
        return out
    grid = lambda meta: (cdiv(L_out, meta["BLOCK_L"]), cdiv(C_out, meta["BLOCK_C"]), B)
    sx, so = x.stride(), out.stride()                        # one call each: this runs per launch
    m, channels_inner = C_out // C, sx[1] == 1 and C > 1
    if channels_inner:       # each tap loads BLOCK_C adjacent channels' weights: tap-major, 16 B a load
        weight = tap_major(weight)
    sw = weight.stride()
    kernel, strips = _dw_conv1d_kernel, {}
    vec = 0 if channels_inner or not STRIPS else strip_width(sx, so, K, stride, dilation, pad_left, L, L_out,
                                                              x.element_size())   # outputs a strip, 0: generic
    if vec:
        kernel, grid, strips = _dw_conv1d_strip_tuned, _strips_grid(B, C_out, L_out, vec), {"VEC": vec}
    # Determines the autotuner's key (its key list + every tensor argument's dtype).
    size = size_class(B * L_out)
    tuned_key = (C_out, size, m, K, stride, dilation, channels_inner, sw[0], x.dtype, weight.dtype,
                 None if bias is None else bias.dtype, vec)
    plan = launch_tuned(
        kernel, grid, tuned_key,
        x, weight, bias if bias is not None else weight, out,
        L, L_out, C_out, size,
        sx[0], sx[1], sx[2],
        sw[0], sw[2],
        so[0], so[1], so[2],
        PAD_LEFT=pad_left, M=m, K=K, STRIDE=stride, DILATION=dilation,
        HAS_BIAS=bias is not None, ACTIVATION=activation, ACC_DTYPE=_acc_dtype(x.dtype),
        X_CHANNELS_INNER=channels_inner, **strips,
    )
    if plan is not None and key is not None:
        keep_plan(_PLANS, key, (plan, out.shape, out.stride(), channels_inner))
    return out


def _plan_key(x, weight, bias, stride, padding, dilation, activation):
    """The key dw_conv1d keeps this call's Plan under (triton_launch.plan_key)."""
    return plan_key(x, weight, bias, (stride, *padding, dilation, activation, copies(weight), *switches()))


def switches() -> tuple:
    """The kernel switches a launch's kernel and tuner depend on (read per launch): Plans key on them."""
    return STRIPS, triton_vectors.WIDE_HALF


def dw_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
              stride: int = 1, padding: tuple[int, int] = (0, 0), dilation: int = 1,
              activation: str | None = None) -> torch.Tensor:
    """Depthwise conv1d (groups=C, multiplier C_out // C) in one launch.

    x (B, C, L) any strides; weight (C*m, 1, K); bias (C*m,) or None; padding (left, right)
    zeros; activation None or "silu" (applied after bias). Returns (B, C*m, L_out) in x.dtype.
    Inputs are assumed validated by `models.depthwise.spec` (shapes, devices, dtypes).
    """
    key = None
    if triton_launch.ENABLED and triton_launch.PLANS:   # direct launches: a call seen before replays its Plan
        # The arguments as given (1 and True, 1.0 key alike: they launch alike once made ints);
        # an invalid activation never has a Plan, so it reaches the check below.
        key = _plan_key(x, weight, bias, stride, padding, dilation, activation)
        kept = _PLANS.get(key)
        out = None if kept is None else triton_launch.replay(kept, x, weight, bias)
        if out is not None:
            return out
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    left, right = padding
    return _launch_conv1d(x, weight, bias, int(stride), int(left), int(right), int(dilation), activation, key)


def kept_plan(x, weight, bias=None, stride=1, padding=(0, 0), dilation=1, activation=None):
    """What dw_conv1d keeps for this call for triton_launch.replay, or None (fused.cached_op's ops
    replay it per call signature, past dw_conv1d)."""
    return _PLANS.get(_plan_key(x, weight, bias, stride, padding, dilation, activation))
