"""A forward whose rows all have one shape, replayed from CUDA graphs: one graph per (bucket of
rows, depthwise policy).

MobileNetV2 on a GPU at small batch is host-bound: ~150 kernels a forward, each costing the
host more to launch than the device to run (the first H200 run: 22-35 us of host per cuDNN
call). A replayed graph is one host launch for all of them.

    graphed = GraphedForward(fn, row_shape=(3, 224, 224), dtype=..., device=...,
                             memory_format=torch.channels_last)
    y = graphed(x)                    # x (B, *row_shape): fn's output rows for x's rows

Inside a capture (and its warm-up) the depthwise ops' `auto` picks by device time
(depthwise.dispatch.for_cuda_graphs: on NHWC 3x3 layers in bfloat16, the fused strip kernel).
A call of B rows replays the graph of the next power of two >= B rows (captured on first use,
at most MAX_GRAPHS kept, least recently used dropped): x is copied into the graph's static
input, the graph replays, and the first B rows of its output are returned (a copy: the next
replay rewrites the output). The rows past B hold an earlier call's inputs (zeros at first):
computed and never returned, so `fn` must treat rows independently (a CNN in eval mode does).

It runs fn(x) eagerly instead when:
- the depthwise policy is one of EAGER_POLICIES: per_group is the "before" path, measured with
  its C launches a layer; compiled brings torch.compile's own machinery;
- a profiler is recording (count_launches: the kernels a replay runs are the eager ones, and a
  capture under the profiler is not relied on) or a depthwise timer is active (it times the
  depthwise calls, which a replay does not make: the served model's sampled forwards stay eager).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

from . import profiling
from .depthwise import current_impl
from .depthwise.dispatch import for_cuda_graphs

EAGER_POLICIES = ("per_group", "compiled")
MAX_GRAPHS = 8          # (bucket, policy) pairs kept: 1..32 rows is 6 buckets of one policy
WARMUP_CALLS = 2        # eager calls on a side stream before the capture (autotuning, cuDNN plans)


def _profiler_active() -> bool:
    return bool(getattr(torch.autograd.profiler, "_is_profiler_enabled", False))


class GraphedForward:
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], row_shape: tuple[int, ...],
                 dtype: torch.dtype, device: torch.device | str,
                 memory_format: torch.memory_format = torch.contiguous_format, runner=None):
        from .lfm2.decoding import GraphRunner
        self.fn, self.row_shape, self.dtype = fn, tuple(row_shape), dtype
        self.device, self.memory_format = torch.device(device), memory_format
        self.runner = runner or GraphRunner      # tests stand in a CPU fake
        self.graphs: OrderedDict = OrderedDict()  # (rows, policy) -> (static input, output, runner)
        self.captures = self.replays = 0

    def eager_now(self) -> bool:
        """This call runs fn eagerly (see the module docstring)."""
        return current_impl() in EAGER_POLICIES or _profiler_active() or profiling.timer_active()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.eager_now():
            return self.fn(x)
        if tuple(x.shape[1:]) != self.row_shape or x.shape[0] < 1:
            raise ValueError(f"expected (B >= 1, {', '.join(map(str, self.row_shape))}) rows, got {tuple(x.shape)}")
        rows = x.shape[0]
        key = (1 << (rows - 1).bit_length(), current_impl())
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key)
        else:
            self.graphs.move_to_end(key)
        static, out, runner = entry
        static[:rows].copy_(x)
        runner.replay()
        self.replays += 1
        return out[:rows].clone()

    def _capture(self, key: tuple) -> tuple:
        """Capture fn over a static input of key[0] rows; keep it, dropping the least recently used."""
        with torch.inference_mode(False):        # a normal tensor: copied into in and out of inference mode
            static = torch.zeros((key[0], *self.row_shape), dtype=self.dtype, device=self.device)
            static = static.contiguous(memory_format=self.memory_format)
        runner = self.runner(self.device)
        # for_cuda_graphs: the depthwise calls are replayed, so `auto` picks by device time (the
        # warm-up too, so what the capture launches is compiled and autotuned before it).
        with profiling.timers_suspended(), for_cuda_graphs():
            out = runner.capture(lambda: self.fn(static), WARMUP_CALLS)
        self.captures += 1
        self.graphs[key] = entry = (static, out, runner)
        while len(self.graphs) > MAX_GRAPHS:
            self.graphs.popitem(last=False)
        return entry

    def clear(self) -> None:
        """Drop every graph (their memory goes back to the caching allocator)."""
        self.graphs.clear()
