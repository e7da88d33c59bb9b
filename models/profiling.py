"""Launch counting and depthwise timing hooks.

    count_launches(fn, *args, **kwargs) -> LaunchCount(aten_ops, cuda_kernels)
    with depthwise_timer() as t: ...       # t.seconds, t.calls: time inside depthwise ops
    with record_depthwise(device): ...     # what each public depthwise op wraps its work in

`aten_ops` counts every ATen op dispatched by `fn` as seen by a TorchDispatchMode: top-level
ops only (an op's own internals run with the mode popped), views included, on every device.
torch.compile'd code cannot run under a Python dispatch mode, so compiled regions wrap their
call in `opaque_region()`: it runs them with the mode suspended and counts each as 1 (one
generated kernel; its guards and allocations are not ATen ops anyway).
`cuda_kernels` counts kernels the GPU ran (torch.profiler device events, memcpy/memset
excluded); None without CUDA.

Timing contract for op authors (dispatch.py, short_conv.py): wrap the op's work in
`record_depthwise(device)`. It is a no-op costing one contextvar read when no
`depthwise_timer` is active. When one is, it synchronises `device` before and after (so GPU
time is counted, not launch time) and adds the wall time and one call to every active timer.
Records nested inside another record (short_conv_block calling depthwise_conv1d) are not
counted again: only the outermost one times.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LaunchCount(NamedTuple):
    aten_ops: int                   # ATen ops dispatched (every device)
    cuda_kernels: int | None        # GPU kernels run; None when CUDA is not available


class _OpCounter(TorchDispatchMode):
    """Counts every op that reaches the Python dispatch mode (top-level ops only: while the
    op runs the mode is popped, so its internal ops are not seen)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


_PROFILER_LOCK = threading.Lock()
_NULL = contextlib.nullcontext()
_NOT_KERNELS = ("Memcpy", "Memset", "memcpy", "memset")


def _count_cuda_kernels(prof) -> int:
    from torch.autograd import DeviceType
    # device-side events are kernels, memcpy/memset, and (newer torch) GPU user annotations
    return sum(1 for e in prof.events()
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
               and not e.name.startswith(_NOT_KERNELS))


_COUNTER: contextvars.ContextVar[_OpCounter | None] = contextvars.ContextVar(
    "dwserve_op_counter", default=None)


class _Opaque:
    """Run a torch.compile'd region with count_launches' mode suspended; count it as one op."""
    __slots__ = ("counter", "cm")

    def __init__(self, counter: _OpCounter):
        self.counter = counter

    def __enter__(self):
        from torch.utils._python_dispatch import _disable_current_modes
        self.counter.count += 1
        self.cm = _disable_current_modes()
        self.cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def opaque_region():
    """Context manager for compiled code (see the module docstring); a no-op unless
    count_launches is counting in this context."""
    counter = _COUNTER.get()
    return _NULL if counter is None else _Opaque(counter)


def _counting(fn, args, kwargs) -> int:
    with _OpCounter() as ops:
        token = _COUNTER.set(ops)
        try:
            fn(*args, **kwargs)
        finally:
            _COUNTER.reset(token)
    return ops.count


def count_launches(fn, *args, **kwargs) -> LaunchCount:
    """Run fn(*args, **kwargs) once and count ATen ops (and CUDA kernels when CUDA is present).

    Run fn once beforehand if it has one-off work (compilation, autotuning, cache fills)
    that should not be counted."""
    if not torch.cuda.is_available():
        return LaunchCount(_counting(fn, args, kwargs), None)
    from torch.profiler import ProfilerActivity, profile
    with _PROFILER_LOCK:          # the profiler is process-global: one count at a time
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            ops = _counting(fn, args, kwargs)
            torch.cuda.synchronize()
    return LaunchCount(ops, _count_cuda_kernels(prof))


# ---------------------------------------------------------------- depthwise timing

@dataclass
class DepthwiseTimer:
    """Accumulated wall time (seconds) and number of calls of the depthwise ops run inside."""
    seconds: float = 0.0
    calls: int = 0
    parent: "DepthwiseTimer | None" = None      # an enclosing timer also receives every record


_TIMER: contextvars.ContextVar[DepthwiseTimer | None] = contextvars.ContextVar(
    "dwserve_depthwise_timer", default=None)
_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dwserve_depthwise_recording", default=False)


@contextlib.contextmanager
def depthwise_timer():
    """Time every depthwise op called inside (this thread / async task only)."""
    timer = DepthwiseTimer(parent=_TIMER.get())
    token = _TIMER.set(timer)
    try:
        yield timer
    finally:
        _TIMER.reset(token)


def _sync(device) -> None:
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu":
        mod = getattr(torch, device.type, None)             # e.g. torch.mps.synchronize
        if mod is not None and hasattr(mod, "synchronize"):
            mod.synchronize()


class _Record:
    """One outermost timed depthwise call: sync, time, sync, add to the timer chain."""
    __slots__ = ("timer", "device", "t0", "token")

    def __init__(self, timer: DepthwiseTimer, device):
        self.timer, self.device = timer, device

    def __enter__(self):
        _sync(self.device)
        self.token = _RECORDING.set(True)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        elapsed = time.perf_counter() - self.t0
        _RECORDING.reset(self.token)
        t = self.timer
        while t is not None:
            t.seconds += elapsed
            t.calls += 1
            t = t.parent
        return False



def record_depthwise(device: torch.device | str | None = None):
    """Context manager around one depthwise op's work (see the module docstring). device: the
    tensors' device, synchronised while timing; None synchronises the current CUDA device if
    CUDA is in use."""
    timer = _TIMER.get()
    if timer is None or _RECORDING.get():
        return _NULL
    return _Record(timer, device)


def timer_active() -> bool:
    """A depthwise_timer is timing calls in this context (a CUDA-graph replay would make none)."""
    return _TIMER.get() is not None


@contextlib.contextmanager
def timers_suspended():
    """No depthwise_timer records inside (this context only): for CUDA-graph capture, where
    the device synchronisation a record does is illegal; a replayed graph runs no Python,
    so depthwise ops inside a graph are never timed anyway."""
    token = _TIMER.set(None)
    try:
        yield
    finally:
        _TIMER.reset(token)
