"""Tap-major views of depthwise weights, for the fused kernels whose channels are unit-stride.

A depthwise weight (C, 1, *kernel) is stored channel-major: one channel's taps are adjacent.
The kernels that tile channels as the unit-stride dim (conv2d on channels_last input, conv1d
on a (B, L, C) view, LFM2's short-conv block) load, for each tap, BLOCK_C adjacent channels'
weights: channel-major, those are BLOCK_C values `prod(kernel)` apart, one scalar load each
(2 bytes in 16-bit dtypes). The same weight stored tap-major, (*kernel, 1, C) in memory and
viewed back as (C, 1, *kernel) (same shape and indexing, only the strides differ: stride(0)
== 1), lets each tap's channels load 16 bytes at a time. On sm_90 that takes the 16-bit NHWC
conv2d kernel from 81 load instructions and 125 registers per thread to 18 and 72, so more
warps fit on an SM (benchmarks/results/ptx-sm90-*.md). The kernels take the weight's strides,
so they need no change: the launchers pass `tap_major(weight)` instead of `weight`.

The copy is made once per weight and cached on the weight tensor itself (`cached_on`, which
also keeps the slice_sum short-conv block's (K, C) taps; slice_sum.py caches its views the
same way), keyed by the tensor's version counter, which every in-place update bumps
(load_state_dict, optimiser steps, `copy_` under no_grad), and by its data pointer, which
`module.to(dtype/device)` changes without bumping the version (it swaps `param.data`). The
entry holds the source tensor, so that memory cannot be freed and reused by a later weight at
the same address. (Writes through `param.data` bypass the version counter, as they bypass
autograd's checks: update weights in place under torch.no_grad() instead.) The weight itself
is passed, uncached, when
- it is already tap-major (stride(0) == 1), or ENABLED is False, as inside `as_stored()`
  (benchmarks/gpu.py's layout step times both layouts);
- it is an inference tensor: those have no version counter, so an in-place update could not
  be detected (models.registry builds models outside inference mode, so served parameters
  are cached).
A CUDA graph is captured after warm-up calls (Triton compiles and loads a kernel variant at its
first launch, which a capturing stream does not allow), so the capture finds the copy the
warm-up made and launches the same variant on it: replays then read that copy, and a weight
updated in place after the capture needs a new capture (as any input baked into a graph).
The project's own graph, LFM2's decode step, never reads a copy: a one-token short-conv block
passes the weight itself (see triton_short_conv).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.autograd.forward_ad as fwAD

ENABLED = True
_ATTR = "_dwserve_tap_major"
NO_STORAGE = (RuntimeError, NotImplementedError)   # data_ptr() of a torch.func wrapper (vmap, jvp)


def has_tangent(t: torch.Tensor | None) -> bool:
    """t carries a forward-mode AD tangent (torch.autograd.forward_ad.make_dual): a cached or
    detached derivative of it would drop the tangent. One global read outside a dual level."""
    return fwAD._current_level >= 0 and t is not None and fwAD.unpack_dual(t).tangent is not None


def cached_on(weight: torch.Tensor, attr: str, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """make(weight.detach()), cached on the weight tensor under `attr` by version counter and
    data pointer (the module docstring says why both). From the weight itself, uncached, for
    a forward-mode dual (its tangent must flow; checked first, so callers need not) and a
    torch.func wrapper (no storage); from weight.detach(), uncached, for an inference tensor
    (no version counter) and while torch.compile traces (no attributes set from traced code)."""
    if fwAD._current_level >= 0 and has_tangent(weight):   # the level first: no call outside a dual level
        return make(weight)
    if weight.is_inference() or torch.compiler.is_compiling():
        return make(weight.detach())
    try:
        key = (weight._version, weight.data_ptr())
    except NO_STORAGE:
        return make(weight)
    cached = getattr(weight, attr, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    source = weight.detach()
    derived = make(source)
    try:
        setattr(weight, attr, (key, derived, source))   # source: its memory stays ours (see above)
    except (AttributeError, RuntimeError):   # tensors that refuse attributes: no cache
        pass
    return derived


def _tap_major_copy(source: torch.Tensor) -> torch.Tensor:
    n = source.dim()
    stored = source.permute(*range(2, n), 1, 0).contiguous()               # (*kernel, 1, C)
    return stored.permute(n - 1, n - 2, *range(n - 2))                     # (C, 1, *kernel)


def copies(weight: torch.Tensor) -> bool:
    """Whether tap_major(weight) is a copy with other strides than weight's (so a launch Plan
    made with it must not be replayed where it is not: as_stored(), an inference weight)."""
    return ENABLED and weight.stride(0) != 1 and not weight.is_inference()


def tap_major(weight: torch.Tensor) -> torch.Tensor:
    """weight (C, 1, *kernel), any strides -> the same values, shape (C, 1, *kernel), with
    stride(0) == 1 and the taps outermost; cached per weight tensor and version."""
    if not ENABLED or weight.stride(0) == 1 or weight.is_inference():
        return weight
    return cached_on(weight, _ATTR, _tap_major_copy)


@contextlib.contextmanager
def as_stored() -> Iterator[None]:
    """Within the block the kernels get weights as stored (no tap-major copies), then ENABLED
    is restored. Process-wide, not per thread: for benchmarks and reports, not the service."""
    global ENABLED
    saved, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = saved


def call_as_stored(fn: Callable[[], object]) -> Callable[[], object]:
    """fn, run inside as_stored() on every call."""
    def call():
        with as_stored():
            return fn()
    return call
