"""The `slice_sum` impl: K strided/dilated slices times per-channel scalars, summed.

    out[b, c*m + j, t] = bias[c*m + j] + sum_k x_pad[b, c, t*stride + k*dilation] * w[c*m + j, k]

Plain torch, every device, differentiable. The op count is about 2 per tap (one slice view,
one multiply-add) plus a handful, whatever the channel count C: the rewrite of candle PR
#3531 (seeds/), which replaced C single-channel convs + cat. 2d does the same over the
KH*KW taps. The channel multiplier m needs no copy: x is viewed (B, C, 1, L) and the taps
(C, m, 1), so broadcasting produces (B, C, m, L_out), which is (B, C*m, L_out) in memory.

fp16/bf16 accumulate in fp32: the weights are cast once (tiny) and the fp32 accumulator
promotes each fp16 slice inside the multiply-add, so there is no extra pass over x.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .spec import match_memory_format, out_size
from .weight_layout import NO_STORAGE

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _taps(weight: torch.Tensor, C: int, m: int, acc: torch.dtype, spatial: int):
    """weight (C*m, 1, *kernel) -> tuple of T=prod(kernel) per-channel scalars in `acc` dtype,
    each shaped to broadcast against x slices: (C, 1, ...) if m == 1 else (C, m, 1, ...).

    Without autograd the views are cached on the weight tensor itself (so the cache dies with
    the weight), keyed by its version counter (bumped by every in-place update, e.g.
    load_state_dict) and data pointer (a new storage: `param.data = t`, vector_to_parameters,
    Module.to), the old storage kept referenced so its address cannot be reused while the
    entry lives (as weight_layout.cached_on does): at decode-sized calls these ~6 view ops
    are a third of the op's cost.
    """
    # Not cached: under autograd, under torch.compile (it traces the plain path), for
    # inference tensors (they have no version counter to invalidate the cache with), and for
    # torch.func wrappers (vmap, jvp: no storage, so no data pointer).
    if ((weight.requires_grad and torch.is_grad_enabled()) or torch.compiler.is_compiling()
            or weight.is_inference()):
        return _make_taps(weight, C, m, acc, spatial)
    try:
        key = (weight._version, weight.data_ptr(), C, m, acc, spatial, torch.is_inference_mode_enabled())
    except NO_STORAGE:
        return _make_taps(weight, C, m, acc, spatial)
    cached = getattr(weight, "_dwserve_taps", None)
    if cached is None or cached[0] != key:
        cached = (key, _make_taps(weight, C, m, acc, spatial), weight.detach())   # [2]: holds the storage
        try:
            weight._dwserve_taps = cached
        except (AttributeError, RuntimeError):   # tensors that refuse attributes: no cache
            pass
    return cached[1]


def _make_taps(weight: torch.Tensor, C: int, m: int, acc: torch.dtype, spatial: int):
    T = math.prod(weight.shape[2:])
    w = weight.to(acc).reshape(C, m, T).permute(2, 0, 1)        # (T, C, m)
    lead = (T, C) if m == 1 else (T, C, m)                      # m == 1: x keeps its (B, C, ...) view
    return w.reshape(*lead, *(1,) * spatial).unbind(0)          # trailing 1s for the spatial dims


def _bias(bias: torch.Tensor | None, C: int, m: int, acc: torch.dtype, spatial: int):
    if bias is None:
        return None
    return bias.to(acc).reshape(C, *(() if m == 1 else (m,)), *(1,) * spatial)


def _sum(slices, taps, bias) -> torch.Tensor:
    """acc = bias + sum_t slices[t] * taps[t]; slices is an iterator, so each view is made lazily."""
    slices = iter(slices)
    first, w0 = next(slices), taps[0]
    acc = first * w0 if bias is None else torch.addcmul(bias, first, w0)
    for sl, w in zip(slices, taps[1:]):
        acc.addcmul_(sl, w)        # in place: autograd-safe (addcmul's backward needs sl, w only)
    return acc


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: tuple[int, int], dilation: int) -> torch.Tensor:
    """x (B, C, L) any strides, weight (C*m, 1, K) -> (B, C*m, L_out)."""
    B, C, L = x.shape
    Cm, _, K = weight.shape
    m, acc = Cm // C, _acc_dtype(x.dtype)
    left, right = padding
    L_out = out_size(L, K, stride, left, right, dilation)
    xp = F.pad(x, (left, right)) if left or right else x        # (B, C, L + left + right)
    if m > 1:
        xp = xp.unsqueeze(2)                                    # (B, C, 1, Lp): broadcast over m
    span = (L_out - 1) * stride + 1                             # extent of one strided slice
    slices = (xp[..., k * dilation:k * dilation + span:stride] for k in range(K))  # (B, C, [1,] L_out)
    out = _sum(slices, _taps(weight, C, m, acc, 1), _bias(bias, C, m, acc, 1))
    out = out.reshape(B, Cm, L_out)
    return match_memory_format(out if out.dtype == x.dtype else out.to(x.dtype), x)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> torch.Tensor:
    """x (B, C, H, W) NCHW or channels_last, weight (C*m, 1, KH, KW) -> (B, C*m, H_out, W_out)."""
    B, C, H, W = x.shape
    Cm, _, KH, KW = weight.shape
    m, acc = Cm // C, _acc_dtype(x.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = padding
    H_out = out_size(H, KH, sh, top, bottom, dh)
    W_out = out_size(W, KW, sw, left, right, dw)
    xp = F.pad(x, (left, right, top, bottom)) if any(padding) else x   # F.pad: last dim first
    if m > 1:
        xp = xp.unsqueeze(2)                                    # (B, C, 1, Hp, Wp)
    span_h, span_w = (H_out - 1) * sh + 1, (W_out - 1) * sw + 1

    def slices():                                               # taps in weight's row-major order
        for i in range(KH):
            rows = xp[..., i * dh:i * dh + span_h:sh, :]        # (B, C, [1,] H_out, Wp)
            for j in range(KW):
                yield rows[..., j * dw:j * dw + span_w:sw]      # (B, C, [1,] H_out, W_out)

    out = _sum(slices(), _taps(weight, C, m, acc, 2), _bias(bias, C, m, acc, 2))
    out = out.reshape(B, Cm, H_out, W_out)
    return match_memory_format(out if out.dtype == x.dtype else out.to(x.dtype), x)
