"""One decode step of a causal depthwise conv1d with a rolling state, one Triton launch.

    window[b, c, :] = cat(conv_state[b, c, :], x_new[b, c])          # K values
    out[b, c]       = act(bias[c] + sum_k w[c, k] * window[b, c, k])
    conv_state[b, c, :] <- window[b, c, 1:]                           # in place

Each program owns BLOCK_C channels of one batch row, so no two programs touch the same
state entries. Inside a program every thread loads its reads first, then a CTA barrier,
then the stores: a thread writing state[j] cannot overwrite a value another thread still
has to read as state[j+1].

Imported lazily by `models.depthwise.fused` (so `import models` works without triton).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import triton_launch
from .triton_launch import cdiv, keep_plan, launch, next_power_of_2, tensors_key

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"   # as triton.jit reads it below (fused checks it)

ACTIVATIONS = (None, "silu")


@triton.jit
def _dw_decode_kernel(
    x_ptr, s_ptr, w_ptr, b_ptr, out_ptr,
    C,
    sx_b, sx_c,                  # x_new (B, C) strides
    ss_b, ss_c, ss_k,            # conv_state (B, C, K-1) strides
    sw_c, sw_k,                  # weight (C, 1, K) strides
    so_b, so_c,                  # out (B, C) strides
    K: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)   # [BLOCK_C]
    offs_k = tl.arange(0, BLOCK_K)                     # [BLOCK_K], BLOCK_K >= K
    mask_c = offs_c < C
    s_row = s_ptr + pid_b * ss_b + offs_c[:, None] * ss_c                 # [BLOCK_C, 1]
    x_new = tl.load(x_ptr + pid_b * sx_b + offs_c * sx_c, mask=mask_c, other=0.0)   # [BLOCK_C]

    # window[:, k] = state[:, k] for k < K-1, x_new for k == K-1.   [BLOCK_C, BLOCK_K]
    in_state = mask_c[:, None] & (offs_k < K - 1)[None, :]
    window = tl.load(s_row + offs_k[None, :] * ss_k, mask=in_state, other=0.0)
    window = tl.where((offs_k == K - 1)[None, :], x_new[:, None], window)
    w = tl.load(w_ptr + offs_c[:, None] * sw_c + offs_k[None, :] * sw_k,
                mask=mask_c[:, None] & (offs_k < K)[None, :], other=0.0)  # [BLOCK_C, BLOCK_K]
    acc = tl.sum(w.to(ACC_DTYPE) * window.to(ACC_DTYPE), axis=1)          # [BLOCK_C]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(ACC_DTYPE)
    if ACTIVATION == "silu":
        acc = acc * tl.sigmoid(acc)

    # new_state[:, j] = window[:, j+1]: state[:, j+1] for j+1 < K-1, else x_new.  [BLOCK_C, BLOCK_K]
    shifted = tl.load(s_row + (offs_k + 1)[None, :] * ss_k,
                      mask=mask_c[:, None] & (offs_k + 1 < K - 1)[None, :], other=0.0)
    new_state = tl.where((offs_k == K - 2)[None, :], x_new[:, None], shifted)
    tl.debug_barrier()           # all reads of the old state are done before any write
    tl.store(s_row + offs_k[None, :] * ss_k, new_state.to(s_ptr.dtype.element_ty), mask=in_state)
    tl.store(out_ptr + pid_b * so_b + offs_c * so_c, acc.to(out_ptr.dtype.element_ty), mask=mask_c)


_PLANS: dict = {}    # tensors_key(...) -> (triton_launch.Plan, output shape)


def _launch_decode(x_new, conv_state, weight, bias, activation, key=None):
    """Allocate out (B, C) and launch one program per (channel block, batch row); keep the
    launch's Plan under `key` when it went direct."""
    B, C = x_new.shape
    K = weight.shape[-1]
    out = x_new.new_empty((B, C))
    if out.numel() == 0:
        return out
    # Pure bandwidth (K+1 loads, K stores per channel): a fixed block, no autotune. Autotune
    # would also re-run the kernel while timing configs, corrupting the in-place state.
    block_c = min(256, next_power_of_2(C))
    block_k = next_power_of_2(K)
    grid = (cdiv(C, block_c), B)
    plan = launch(_dw_decode_kernel, grid,   # _dw_decode_kernel[grid](...), past JITFunction.run when on (triton_launch)
        x_new, conv_state, weight, bias if bias is not None else weight, out,
        C,
        x_new.stride(0), x_new.stride(1),
        *conv_state.stride(),
        weight.stride(0), weight.stride(2),
        out.stride(0), out.stride(1),
        K=K, BLOCK_K=block_k, HAS_BIAS=bias is not None, ACTIVATION=activation,
        ACC_DTYPE=tl.float64 if x_new.dtype == torch.float64 else tl.float32,
        BLOCK_C=block_c, num_warps=4 if block_c >= 128 else 1,
    )
    if plan is not None and key is not None:
        keep_plan(_PLANS, key, (plan, out.shape, out.stride()))
    return out


def dw_conv1d_decode_step(x_new: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None,
                          activation: str | None = None) -> torch.Tensor:
    """One causal-conv step: x_new (B, C), conv_state (B, C, K-1) updated in place,
    weight (C, 1, K), bias (C,) or None -> out (B, C) in x_new.dtype. K >= 2.

    Shapes are assumed validated by `models.depthwise.short_conv`.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    key = None
    if triton_launch.ENABLED and triton_launch.PLANS:   # direct launches: a call seen before replays its Plan
        key = tensors_key((x_new, conv_state, weight, bias), activation)
        kept = _PLANS.get(key)
        if kept is not None:
            plan, shape, strides = kept
            out = x_new.new_empty_strided(shape, strides)   # as triton_launch.replay
            if plan.launch((x_new, conv_state, weight, bias if bias is not None else weight, out), out):
                return out
    return _launch_decode(x_new, conv_state, weight, bias, activation, key)
