"""Validation and padding resolution for the depthwise ops.

Every impl module is called only with what these functions return (docs/ARCHITECTURE.md):

    conv1d: stride int,        padding (left, right),              dilation int
    conv2d: stride (sh, sw),   padding (top, bottom, left, right), dilation (dh, dw)

Accepted user forms of `padding`:
    int p                    p zeros on every side
    1d: (p,) | (left, right)             2d: (ph, pw) | (top, bottom, left, right)
    "valid"                  no padding
    "same"                   stride 1 only; total dilation*(K-1) per dim, the odd extra on the
                             right/bottom (as PyTorch does)
    "causal"                 conv1d only: left dilation*(K-1), right 0 (output length L at stride 1)

Bad input raises ValueError naming what was expected; nothing is reshaped silently.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

PADDING_STRINGS = {"conv1d": ("valid", "same", "causal"), "conv2d": ("valid", "same")}


def _is_int(v) -> bool:
    """An int as F.conv takes one: Python's or numpy's integers (numbers.Integral), never a bool.
    Python's int first: these checks run on every call, and the ABC check costs ~0.3 us."""
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def _as_ints(vals) -> Optional[tuple[int, ...]]:
    """A sequence of ints as a tuple of Python ints (numpy's converted), or None where one is not
    an int. One pass for Python's ints: this runs on every call."""
    if all(type(v) is int for v in vals):
        return tuple(vals)
    return tuple(int(v) for v in vals) if all(_is_int(v) for v in vals) else None


def _ints(name: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """int or n-tuple of ints (each >= minimum) -> n-tuple of Python ints."""
    if type(value) is int:   # the common call (stride=1): no tuple walk
        vals = (value,) * n
    else:
        vals = (int(value),) * n if _is_int(value) else value
        ints = _as_ints(vals) if isinstance(vals, (tuple, list)) and len(vals) in (1, n) else None
        if ints is None:
            raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
        vals = ints * (n // len(ints))
    if min(vals) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in every dim, got {value!r}")
    return vals


def _padding(padding, op: str, kernel: tuple[int, ...], dilation: tuple[int, ...],
             stride: tuple[int, ...]) -> tuple[int, ...]:
    """Resolve `padding` to explicit per-side ints: 1d (left, right), 2d (top, bottom, left, right)."""
    dims = len(kernel)
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS[op]:
            hint = " ('causal' is conv1d only; pad x yourself for 2d)" if padding == "causal" else ""
            raise ValueError(f"padding string for {op} must be one of {PADDING_STRINGS[op]}, "
                             f"got {padding!r}{hint}")
        if padding == "valid":
            return (0,) * (2 * dims)
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if padding == "causal":
            return (totals[0], 0)
        if any(s != 1 for s in stride):                    # PyTorch refuses this too
            raise ValueError(f"padding='same' needs stride 1, got stride {stride}; "
                             f"pass explicit padding instead")
        out: tuple[int, ...] = ()
        for t in totals:                                   # odd extra goes right / bottom
            out += (t // 2, t - t // 2)
        return out
    if type(padding) is int or _is_int(padding):
        vals = (int(padding),) * (2 * dims)
    elif (isinstance(padding, (tuple, list)) and len(padding) in (dims, 2 * dims)
          and (ints := _as_ints(padding)) is not None):
        # (p,) / (ph, pw): symmetric per dim as in PyTorch; 2*dims entries: explicit per side.
        vals = tuple(v for v in ints for _ in (0, 1)) if len(ints) == dims else ints
    else:
        form = "(p,) or (left, right)" if dims == 1 else "(ph, pw) or (top, bottom, left, right)"
        raise ValueError(f"padding must be an int >= 0, {form}, or one of {PADDING_STRINGS[op]}, "
                         f"got {padding!r}")
    if min(vals) < 0:
        raise ValueError(f"padding must be >= 0 on every side, got {padding!r}")
    return vals


def _check_tensors(op: str, x, weight, bias, xdims: str, wdims: str) -> None:
    rank = len(xdims.split(","))
    if not isinstance(x, torch.Tensor) or x.dim() != rank:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x for depthwise_{op} must be a batched {xdims} tensor, got {got} "
                         f"(add a batch dim with x.unsqueeze(0) for one sample)")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor (float32/float16/bfloat16/float64), got {x.dtype}")
    C = x.shape[1]
    if C < 1:
        raise ValueError(f"x must have at least one channel, got shape {tuple(x.shape)}")
    want = wdims.replace("C*m", f"{C}*m")
    if (not isinstance(weight, torch.Tensor) or weight.dim() != rank or weight.shape[1] != 1
            or weight.shape[0] < C or weight.shape[0] % C != 0 or min(weight.shape[2:]) < 1):
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be {wdims} = {want} for x with C={C} channels "
                         f"(depthwise: groups == C, one input channel per filter), got {got}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],)):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"bias must be (C*m,) = ({weight.shape[0]},) to match weight "
                         f"{tuple(weight.shape)}, or None; got {got}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(f"{name} must have x's dtype and device ({x.dtype} on {x.device}), "
                             f"got {t.dtype} on {t.device}; convert with .to(x)")


def _out_sizes(op, sizes, kernel, stride, padding, dilation) -> tuple[int, ...]:
    out = []
    for i, (n, k, s, d) in enumerate(zip(sizes, kernel, stride, dilation)):
        if n < 1:   # padding alone would make an output of padding: torch's convs refuse it (RuntimeError)
            raise ValueError(f"{op}: input size 0 in spatial dim {i} (shape {tuple(sizes)}); expected >= 1 "
                             "(padding does not make up an input)")
        span = d * (k - 1) + 1                              # the dilated kernel's extent
        n_out = (n + padding[2 * i] + padding[2 * i + 1] - span) // s + 1
        if n_out < 1:
            raise ValueError(f"{op}: output size would be {n_out} < 1 in spatial dim {i}: input "
                             f"{n} + padding {padding[2 * i]}+{padding[2 * i + 1]} is shorter than the "
                             f"dilated kernel dilation*(K-1)+1 = {span}; pad more or use a smaller kernel")
        out.append(n_out)
    return tuple(out)


def conv1d_spec(x, weight, bias, stride, padding, dilation) -> tuple[int, tuple[int, int], int]:
    """Validate a depthwise conv1d call -> (stride, (left, right), dilation)."""
    _check_tensors("conv1d", x, weight, bias, "(B, C, L)", "(C*m, 1, K)")
    (s,) = _ints("stride", stride, 1, 1)
    (d,) = _ints("dilation", dilation, 1, 1)
    pad = _padding(padding, "conv1d", tuple(weight.shape[2:]), (d,), (s,))
    _out_sizes("conv1d", tuple(x.shape[2:]), tuple(weight.shape[2:]), (s,), pad, (d,))
    return s, pad, d


def conv2d_spec(x, weight, bias, stride, padding, dilation):
    """Validate a depthwise conv2d call -> ((sh, sw), (top, bottom, left, right), (dh, dw))."""
    _check_tensors("conv2d", x, weight, bias, "(B, C, H, W)", "(C*m, 1, KH, KW)")
    s = _ints("stride", stride, 2, 1)
    d = _ints("dilation", dilation, 2, 1)
    pad = _padding(padding, "conv2d", tuple(weight.shape[2:]), d, s)
    _out_sizes("conv2d", tuple(x.shape[2:]), tuple(weight.shape[2:]), s, pad, d)
    return s, pad, d


def out_size(n: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """PyTorch's output length for one spatial dim (inputs already validated)."""
    return (n + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def match_memory_format(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's output layout: channels_last when a 4d x is channels_last (and not also plain
    contiguous, e.g. H=W=1), else contiguous. No copy when `out` already has that layout."""
    if (out.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous()):
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()
