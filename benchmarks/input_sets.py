"""Rotating input sets, so that a device benchmark times memory, not the cache.

A call timed over the same input buffers again and again reads them from L2 once they fit
(an H200 has 60 MB of it): a 40 MB input timed back to back would be measured at cache
bandwidth, not HBM's, and a memory-bound kernel would look faster than it can ever run on
fresh activations. On CUDA the benchmark's calls therefore cycle through copies of the
inputs, enough that consecutive calls of one fn read at least ROTATE_BYTES of distinct
memory (about 4x that L2). Every impl of a shape gets the same sets, in the same order.

    sets = input_sets(inputs, device)           # [inputs, copy, copy, ...]; [inputs] on CPU
    call = cycling(lambda x, w: op(x, w), sets) # each call takes the next set
    warm(call, len(sets))                       # before timing: compile/autotune, per-set caches

Each set's weight is a tensor of its own, and the impls cache derived weights on the tensor
(slice_sum's per-tap views, the fused kernels' tap-major copy: built at a weight's first
call). `warm` runs the first call (compile, autotune) and then the rest of one cycle, so the
timed calls find every set's caches filled; without it the first timed pass over the sets
the warm-up had not reached built them inside a sample.

The CPU benchmark keeps one set (its committed results were measured that way; a CPU's
last-level cache is where a served model's activations live between layers anyway).
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

import torch

ROTATE_BYTES = 256 << 20     # distinct input bytes between two calls on one set: ~4x a 60 MB L2
ROTATE_MIN_BYTES = 1 << 20   # smaller inputs are launch-bound: one set
ROTATE_MAX_SETS = 64


def _nbytes(inputs: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in inputs)


def input_sets(inputs: tuple, device: torch.device | str, rotate_bytes: int | None = None) -> list[tuple]:
    """`inputs` first, then random copies on the device (same shape, dtype, strides and memory
    format, drawn there: fast), so the sets hold >= rotate_bytes (default ROTATE_BYTES on CUDA,
    0 elsewhere), at most ROTATE_MAX_SETS sets. Inputs under ROTATE_MIN_BYTES get one set."""
    if rotate_bytes is None:
        rotate_bytes = ROTATE_BYTES if torch.device(device).type == "cuda" else 0
    nbytes = _nbytes(inputs)
    if rotate_bytes <= 0 or nbytes < ROTATE_MIN_BYTES:
        return [inputs]
    n = min(ROTATE_MAX_SETS, -(-rotate_bytes // nbytes))
    with torch.inference_mode(False):   # like the first set: weights as a model holds them
        copies = [tuple(torch.randn_like(t) for t in inputs) for _ in range(n - 1)]
    return [inputs, *copies]


def cycling(fn: Callable[..., object], sets: list[tuple]) -> Callable[[], object]:
    """A zero-arg call: fn(*sets[i]) for i = 0, 1, ..., n-1, 0, 1, ..."""
    if len(sets) == 1:
        only = sets[0]
        return lambda: fn(*only)
    it = itertools.cycle(sets)
    return lambda: fn(*next(it))


WARM_MAX_S = 0.05            # warm's cap on the rest of the cycle (slow baselines cache nothing)


def warm(call: Callable[[], object], n_sets: int, max_s: float = WARM_MAX_S) -> None:
    """call() once (compile, autotune, fail early: raises), then n_sets - 1 more calls so a
    cycling call has seen every set once, stopping early after max_s (seconds-long baselines;
    the impls with per-weight caches run in microseconds)."""
    call()
    t0 = time.perf_counter()
    for _ in range(n_sets - 1):
        if time.perf_counter() - t0 > max_s:
            break
        call()
