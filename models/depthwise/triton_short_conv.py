"""LFM2's gated short-conv block in one Triton launch: kernel, launcher, public function.

From bcx (B, L, 3C) = [b | c | x] along the last dim:
    bx[t]       = b[t] * x[t] * mask[t]                      (t in [0, L); mask 0 = padding)
    bx_ext      = cat(conv_state, bx) along time             (K-1 + L values; zeros if no state)
    y[b, t, c]  = c[t] * (bias[c] + sum_k w[c, k] * bx_ext[t + k])
    conv_state <- bx_ext[L : L + K-1]                        (in place, when given)

Each program computes a [BLOCK_L, BLOCK_C] tile of y (C is the unit-stride dim of bcx and
y, so loads and stores vectorise along channels), recomputing b*x for each of the K taps
from bcx (cheap: the K shifted tiles hit cache).

Race freedom of the in-place state update: BLOCK_L >= K-1, so only the first time-tile
(pid_l == 0) reads the old state. That same program writes the new state: it loads every
value the new state needs (from bcx, or from the old state when L < K-1), passes a CTA
barrier, then stores. Other programs never touch the state.

Imported lazily by `models.depthwise.fused` (so `import models` works without triton).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import triton_launch
from .triton_launch import cdiv, keep_plan, launch, next_power_of_2, tensors_key
from .weight_layout import copies, tap_major

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _gated_bx(bcx_row, m_row, src, ok, offs_c, mask_c, C, s_l, s_c, sm_l, HAS_MASK: tl.constexpr,
              ACC_DTYPE: tl.constexpr):
    """b*x (*mask) at time positions src [N] for channels offs_c [BLOCK_C] -> [N, BLOCK_C]."""
    ok2 = ok[:, None] & mask_c[None, :]
    ptrs = bcx_row + src[:, None].to(tl.int64) * s_l + offs_c[None, :] * s_c
    bv = tl.load(ptrs, mask=ok2, other=0.0).to(ACC_DTYPE)                 # b chunk
    xv = tl.load(ptrs + 2 * C * s_c, mask=ok2, other=0.0).to(ACC_DTYPE)   # x chunk
    bx = bv * xv
    if HAS_MASK:
        keep = tl.load(m_row + src * sm_l, mask=ok, other=0) != 0                # [N]
        bx = tl.where(keep[:, None], bx, 0.0)
    return bx


@triton.jit
def _short_conv_kernel(
    bcx_ptr, w_ptr, b_ptr, s_ptr, m_ptr, y_ptr,
    L, C,
    sb_b, sb_l, sb_c,            # bcx (B, L, 3C) strides
    sw_c, sw_k,                  # weight (C, 1, K) strides
    ss_b, ss_c, ss_k,            # conv_state (B, C, K-1) strides
    sm_b, sm_l,                  # mask (B, L) strides
    sy_b, sy_l, sy_c,            # y (B, L, C) strides
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, HAS_MASK: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid_l = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)   # [BLOCK_L] output times
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)   # [BLOCK_C] channels
    mask_t = offs_t < L
    mask_c = offs_c < C
    bcx_row = bcx_ptr + pid_b * sb_b
    m_row = m_ptr + pid_b * sm_b
    s_row = s_ptr + pid_b * ss_b + offs_c * ss_c                            # [BLOCK_C]

    acc = tl.zeros([BLOCK_L, BLOCK_C], dtype=ACC_DTYPE)
    for k in tl.static_range(K):
        src = offs_t + (k - (K - 1))                   # [BLOCK_L] time read by tap k (< 0: the state's)
        val = _gated_bx(bcx_row, m_row, src, mask_t & (src >= 0), offs_c, mask_c, C, sb_l, sb_c, sm_l,
                        HAS_MASK, ACC_DTYPE)                # [BLOCK_L, BLOCK_C], 0 where src < 0
        wv = tl.load(w_ptr + offs_c * sw_c + k * sw_k, mask=mask_c, other=0.0)   # [BLOCK_C]
        acc += wv.to(ACC_DTYPE)[None, :] * val
    if HAS_STATE:
        if pid_l == 0:
            # Left context, first time-tile only: output t, tap k reads state[j] for j = t + k < K-1.
            # Added per state column as one [BLOCK_C] row (not a full tile load per tap: a tile of
            # state, whose unit-stride dim is time, would put acc in a time-major layout, every
            # weight and state value a 2-byte load, in every program). t = j - k < BLOCK_L.
            for j in tl.static_range(K - 1):
                sj = tl.load(s_row + j * ss_k, mask=mask_c, other=0.0).to(ACC_DTYPE)       # [BLOCK_C]
                for k in tl.static_range(j + 1):
                    wk = tl.load(w_ptr + offs_c * sw_c + k * sw_k, mask=mask_c, other=0.0).to(ACC_DTYPE)
                    acc += tl.where((offs_t == j - k)[:, None], (wk * sj)[None, :], 0.0)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(ACC_DTYPE)[None, :]
    ok_y = mask_t[:, None] & mask_c[None, :]
    gate = tl.load(bcx_row + offs_t[:, None].to(tl.int64) * sb_l + (offs_c + C)[None, :] * sb_c,
                   mask=ok_y, other=0.0)               # c chunk [BLOCK_L, BLOCK_C]
    y = acc * gate.to(ACC_DTYPE)
    y_ptrs = y_ptr + pid_b * sy_b + offs_t[:, None].to(tl.int64) * sy_l + offs_c[None, :] * sy_c
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=ok_y)

    if HAS_STATE:
        if pid_l == 0:
            # new_state[j] = bx_ext[L + j] = bx[L - (K-1) + j] if that is >= 0 else old_state[L + j]
            offs_j = tl.arange(0, BLOCK_S)             # [BLOCK_S], BLOCK_S >= K-1
            mask_j = offs_j < K - 1
            src_s = L - (K - 1) + offs_j   # [BLOCK_S]; own name: a runtime `if` may not retype `src`
            new = _gated_bx(bcx_row, m_row, src_s, mask_j & (src_s >= 0), offs_c, mask_c, C, sb_l, sb_c,
                            sm_l, HAS_MASK, ACC_DTYPE)       # [BLOCK_S, BLOCK_C]
            old = tl.load(s_row[None, :] + (L + offs_j)[:, None] * ss_k,
                          mask=(mask_j & (src_s < 0))[:, None] & mask_c[None, :], other=0.0)
            new += old.to(ACC_DTYPE)
            tl.debug_barrier()   # every read of the old state (above and in the taps) precedes any write
            tl.store(s_row[None, :] + offs_j[:, None] * ss_k, new.to(s_ptr.dtype.element_ty),
                     mask=mask_j[:, None] & mask_c[None, :])


_PLANS: dict = {}    # tensors_key(...) -> (triton_launch.Plan, y shape, tap-major weight?, state read?)


def _launch_short_conv(bcx, weight, bias, conv_state, mask, key=None):
    """Allocate y (B, L, C) contiguous and launch one program per (L tile, C tile, b); keep the
    launch's Plan under `key` when it went direct."""
    B, L, C3 = bcx.shape
    C, K = C3 // 3, weight.shape[-1]
    y = bcx.new_empty((B, L, C))
    has_state = conv_state is not None and K > 1
    if y.numel() == 0:          # L == 0 leaves the state as it is: bx_ext[0 : K-1] == conv_state
        return y
    if mask is not None and mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)                  # a view, no copy: Triton loads bytes
    block_s = next_power_of_2(max(K - 1, 1))
    # BLOCK_L >= K-1 is what makes the state update race-free (see module docstring).
    # Buckets of next_power_of_2(L) bound recompiles to a handful per (C, K).
    block_l = max(block_s, min(16 if _INTERPRET else 32, next_power_of_2(max(L, 1))))
    block_c = min(16 if _INTERPRET else 64, next_power_of_2(C))
    grid = (cdiv(L, block_l), cdiv(C, block_c), B)
    tap = L > 1  # each tap loads BLOCK_C channels' weights: tap-major, 16 B a load. Not for one
    if tap:      # token (decode, launch-bound): its CUDA graph reads the weight
        weight = tap_major(weight)
    dummy = weight                                     # any pointer for absent optional inputs
    s_strides = conv_state.stride() if has_state else (0, 0, 0)
    m_strides = mask.stride() if mask is not None else (0, 0)
    # Fixed blocks, no autotune: autotune re-runs the kernel while timing configs, which
    # would corrupt the in-place conv_state.
    plan = launch(_short_conv_kernel, grid,   # _short_conv_kernel[grid](...), past JITFunction.run when on (triton_launch)
        bcx, weight, bias if bias is not None else dummy,
        conv_state if has_state else dummy, mask if mask is not None else dummy, y,
        L, C,
        *bcx.stride(), weight.stride(0), weight.stride(2), *s_strides, *m_strides, *y.stride(),
        K=K, HAS_BIAS=bias is not None, HAS_STATE=has_state, HAS_MASK=mask is not None,
        ACC_DTYPE=tl.float64 if bcx.dtype == torch.float64 else tl.float32,
        BLOCK_L=block_l, BLOCK_C=block_c, BLOCK_S=block_s,
        num_warps=1 if _INTERPRET else 4,
    )
    if plan is not None and key is not None:
        keep_plan(_PLANS, key, (plan, y.shape, y.stride(), tap, has_state))
    return y


def short_conv_block(bcx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     conv_state: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fused gated short conv: bcx (B, L, 3C) any strides, weight (C, 1, K), bias (C,) or None,
    conv_state (B, C, K-1) or None (updated in place), mask (B, L) or None -> y (B, L, C).

    Shapes are assumed validated by `models.depthwise.short_conv`.
    """
    key = None
    if triton_launch.ENABLED and triton_launch.PLANS:   # direct launches: a call seen before replays its Plan
        key = tensors_key((bcx, weight, bias, conv_state, mask), copies(weight))
        kept = _PLANS.get(key)
        if kept is not None:
            plan, shape, strides, tap, has_state = kept
            y = bcx.new_empty_strided(shape, strides)   # as triton_launch.replay
            w = tap_major(weight) if tap else weight
            m = mask.view(torch.uint8) if mask is not None and mask.dtype == torch.bool else mask
            tensors = (bcx, w, bias if bias is not None else w, conv_state if has_state else w,
                       m if m is not None else w, y)
            if plan.launch(tensors, y):
                return y
    return _launch_short_conv(bcx, weight, bias, conv_state, mask, key)
