"""The `compiled` impl: slice_sum through torch.compile (one generated loop/kernel).

One compiled callable per *shape class* = (op, x shape, x strides, dtype, device, weight
shape, bias present, stride, padding, dilation, grad mode): dynamic=False, so each class
compiles once, on its first call (the warm-up), and later calls reuse it. Each class gets
its own copy of the code object, so dynamo's per-code recompile limit (8) is never shared
between classes. On CPU inductor emits C++ (needs a C++ compiler, e.g. gcc).

If torch.compile is unavailable or fails here, calls raise RuntimeError saying so: there is
no silent fallback, since a "compiled" measurement that ran eager would be a lie.

Forward-mode AD (torch.autograd.forward_ad): a compiled callable drops a dual input's tangent,
so a call with one goes through fused_autograd.FusedKernel (the compiled forward, slice_sum's
JVP and backward), as the fused impl does.
"""
from __future__ import annotations

import threading
import types

import torch
import torch.autograd.forward_ad as fwAD

from .. import profiling
from . import fused_autograd, slice_sum
from .weight_layout import has_tangent

_COMPILED: dict = {}          # shape class -> compiled callable
_WARM: set = set()            # shape classes whose first (compiling) call has finished
_LOCK = threading.Lock()
_FAILED = ("the compiled impl could not torch.compile slice_sum on this platform ({err}); "
           "use impl='slice_sum' (same math, eager) or 'native'")


def _fresh(fn):
    """A copy of fn with its own code object, so dynamo keeps a separate cache for it."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)


def _shape_class(op, x, weight, bias, stride, padding, dilation):
    return (op, tuple(x.shape), x.stride(), x.dtype, x.device, tuple(weight.shape), bias is not None,
            stride, padding, dilation, torch.is_grad_enabled(), torch.is_inference_mode_enabled())


def _compiled_fn(key, op):
    fn = _COMPILED.get(key)
    if fn is None:
        with _LOCK:
            fn = _COMPILED.get(key)
            if fn is None:
                try:
                    fn = torch.compile(_fresh(getattr(slice_sum, op)), dynamic=False, fullgraph=True)
                except Exception as err:   # e.g. unsupported Python version for dynamo
                    raise RuntimeError(_FAILED.format(err=f"{type(err).__name__}: {err}")) from err
                _COMPILED[key] = fn
    return fn


def _run(op, x, weight, bias, stride, padding, dilation):
    # the level first: outside a dual level (every served call) one global read
    if fwAD._current_level >= 0 and (has_tangent(x) or has_tangent(weight) or has_tangent(bias)):
        kernel = lambda x, weight, bias: _run_compiled(op, x, weight, bias, stride, padding, dilation)
        reference = lambda x, weight, bias: getattr(slice_sum, op)(x, weight, bias, stride, padding, dilation)
        return fused_autograd.FusedKernel.apply(kernel, reference, x, weight, bias)
    return _run_compiled(op, x, weight, bias, stride, padding, dilation)


def _run_compiled(op, x, weight, bias, stride, padding, dilation):
    key = _shape_class(op, x, weight, bias, stride, padding, dilation)
    fn = _compiled_fn(key, op)
    if key in _WARM:
        if profiling._COUNTER.get() is None:
            return fn(x, weight, bias, stride, padding, dilation)
        with profiling.opaque_region():   # dynamo refuses to run under count_launches' mode
            return fn(x, weight, bias, stride, padding, dilation)
    try:                           # first call compiles: turn a failure into a clear error
        with profiling.opaque_region():
            out = fn(x, weight, bias, stride, padding, dilation)
    except Exception as err:
        raise RuntimeError(_FAILED.format(err=f"{type(err).__name__}: {str(err)[:500]}")) from err
    _WARM.add(key)
    return out


def is_warm(op, x, weight, bias, stride, padding, dilation) -> bool:
    """Whether this call's shape class has already been compiled (arguments as the impl gets them)."""
    return _shape_class(op, x, weight, bias, stride, padding, dilation) in _WARM


def warm_shape_classes() -> int:
    """How many shape classes have been compiled so far in this process."""
    return len(_WARM)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: tuple[int, int], dilation: int) -> torch.Tensor:
    """slice_sum.conv1d, compiled per shape class."""
    return _run("conv1d", x, weight, bias, stride, padding, dilation)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> torch.Tensor:
    """slice_sum.conv2d, compiled per shape class."""
    return _run("conv2d", x, weight, bias, stride, padding, dilation)
