"""The `fused` impl: hand-written Triton kernels, one launch per call.

Entry points follow the impl-module contract of docs/ARCHITECTURE.md (called after
`spec.py` validation), plus the decode step and the LFM2 short-conv block (and `cached_op`,
which dispatch's call cache takes in place of conv1d / conv2d):

    conv1d(x, weight, bias, stride, padding=(left, right), dilation, activation=None)
    conv2d(x, weight, bias, stride=(sh, sw), padding=(top, bottom, left, right), dilation=(dh, dw))
    conv1d_decode_step(x_new, conv_state, weight, bias, activation=None)   # state updated in place
    short_conv_block(bcx, weight, bias, conv_state=None, mask=None)        # state updated in place

Triton is imported lazily, on the first call, so `import models` works without it, and
so `TRITON_INTERPRET` (read by `triton.jit` when the kernels are defined) can be set by
tests before then. The plain-torch references these kernels are tested against are
`models.depthwise.slice_sum` / `native` and `models.depthwise.short_conv`'s `*_reference`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

from . import fused_autograd, triton_launch, weight_layout

CPU_ERROR = ("the fused impl needs a CUDA device (or TRITON_INTERPRET=1 for testing); "
             "use impl='slice_sum' or 'native' on CPU")
TRITON_ERROR = ("the fused impl needs Triton, which is not installed: "
                "pip install 'dwserve[gpu]' (triton>=3.0), or use impl='slice_sum' or 'native'")
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_BATCH = 65535
ROW_LIMIT = 1 << 30      # elements in one batch row of the input (times the channel multiplier): the
                         # kernels index inside a row in int32 (2**31, with room for padding and halos)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (tests without CUDA)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: torch.device | str | None = None) -> bool:
    """Whether `fused` can run on `device` (default: CUDA if present) in this process."""
    if importlib.util.find_spec("triton") is None:
        return False
    device = torch.device(device) if device is not None else None
    if device is None:
        return torch.cuda.is_available() or interpreting()
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


_MODULES: dict = {}      # kernel module name -> (module, whether its kernels were defined under the interpreter)


def _kernels(name: str, *tensors: torch.Tensor, multiplier: int = 1):
    """Check device/dtype and return the Triton kernel module `name`, importing it lazily.
    Runs on every call: kept to a few attribute reads per tensor (host time is what a small
    launch-bound call costs). CUDA tensors are checked against the mode the module's kernels
    were defined in (Triton reads TRITON_INTERPRET then), not the environment now: that is
    what decides whether they can run, and it spares the hot path an environment read (~0.7 us,
    the most expensive line here). CPU tensors (tests only) ask interpreting() each call."""
    row = tensors[0].numel() // max(1, tensors[0].shape[0]) * multiplier
    if row >= ROW_LIMIT:                  # an int32 offset inside a row would wrap: refuse, never corrupt
        raise ValueError(f"the fused impl takes at most {ROW_LIMIT} elements per batch row (its kernels index "
                         f"inside a row in int32), got {row}: split the rows or use impl='native'")
    if tensors[0].shape[0] > MAX_BATCH:   # every kernel puts the batch on grid dim 1 or 2
        raise ValueError(f"the fused impl takes batches of at most {MAX_BATCH} rows (CUDA grid limit), "
                         f"got {tensors[0].shape[0]}: split the batch")
    loaded = _MODULES.get(name)
    interpreted = loaded[1] if loaded is not None else interpreting()
    for t in tensors:
        if t is None:
            continue
        if t.is_cuda:
            if interpreted:      # the interpreter runs kernels on host memory only
                raise RuntimeError("TRITON_INTERPRET=1 runs the fused kernels on CPU tensors only; "
                                   "unset it (before the first fused call) to run them on CUDA")
        elif not (t.device.type == "cpu" and interpreting()):
            raise RuntimeError(CPU_ERROR)
        if t.dtype not in DTYPES and t.is_floating_point():
            raise ValueError(f"the fused impl supports dtypes {DTYPES}, got {t.dtype}")
    if loaded is not None:
        return loaded[0]
    try:
        module = importlib.import_module(f"models.depthwise.{name}")
    except ImportError as exc:
        if importlib.util.find_spec("triton") is None:
            raise RuntimeError(TRITON_ERROR) from exc
        raise
    _MODULES[name] = (module, module._INTERPRET)     # TRITON_INTERPRET when its kernels were defined
    return module


def _contiguous_bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    """The kernels read bias[c] at b_ptr + c: a strided or broadcast (stride-0) bias is made
    contiguous first (C values; a no-op for a parameter)."""
    return bias if bias is None or bias.is_contiguous() else bias.contiguous()


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: tuple[int, int], dilation: int, activation: str | None = None) -> torch.Tensor:
    """Depthwise conv1d, x (B, C, L) any strides, weight (C*m, 1, K) -> (B, C*m, L_out);
    optional SiLU after bias. One launch (backward, if autograd needs one: slice_sum's)."""
    return _conv1d(_kernels("triton_conv1d", x, weight, bias, multiplier=_multiplier(x, weight)), x, weight, bias,
                   stride, padding, dilation, activation)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> torch.Tensor:
    """Depthwise conv2d, x (B, C, H, W) NCHW or channels_last, weight (C*m, 1, KH, KW)
    -> (B, C*m, H_out, W_out) in x's memory format. One launch (backward: slice_sum's)."""
    return _conv2d(_kernels("triton_conv2d", x, weight, bias, multiplier=_multiplier(x, weight)), x, weight, bias,
                   stride, padding, dilation)


def cached_op(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """`op` ("conv1d" / "conv2d") for dispatch's call cache, checked once: every value `_kernels`
    checks per call (devices, dtypes, the batch; the kernels' mode is fixed at their import) is
    part of that cache's key, so the entry's op skips the check (~1 us of a launch-bound call),
    and replays its kernel module's launch Plan itself (_PlannedConv)."""
    k = _kernels("triton_conv1d" if op == "conv1d" else "triton_conv2d", x, weight, bias,
                 multiplier=_multiplier(x, weight))
    return _PlannedConv(k, op)


def _multiplier(x, weight) -> int:
    """Output channels per input channel (the output row is that many times x's, at stride 1)."""
    return max(1, weight.shape[0] // max(1, x.shape[1]))


class _PlannedConv:
    """dispatch's call-cache op for fused conv1d / conv2d: one per call signature (that cache's
    key: shapes, x's strides, dtypes, devices, the op's arguments as given). A repeated inference
    call replays the Plan its kernel module kept for it (triton_launch.Plan) from here, past
    _conv1d/_conv2d and the module's own plan key (~30% of a planned call's host time), keyed on
    what dispatch's key leaves out and a Plan depends on: the 16-byte alignment of x, weight and
    bias, the weight's strides, whether it is made tap-major, and the strip switches.
    Anything else (autograd, a bias to make contiguous, no Plan yet, a Plan that refuses) takes
    the module's path, after which the Plan it kept, if any, is taken here."""
    __slots__ = ("k", "conv", "conv2d", "plans")

    def __init__(self, k, op: str):
        self.k, self.conv2d = k, op == "conv2d"
        self.conv = functools.partial(_conv2d if self.conv2d else _conv1d, k)
        self.plans: dict = {}

    def __call__(self, x, weight, bias, stride, padding, dilation):
        if (bias is not None and not bias.is_contiguous()) or fused_autograd.needs_grad(x, weight, bias):
            return self.conv(x, weight, bias, stride, padding, dilation)
        key = (x.data_ptr() % 16 == 0, weight.data_ptr() % 16 == 0, weight.stride(),
               None if bias is None else bias.data_ptr() % 16 == 0, weight_layout.copies(weight), self.k.switches())
        kept = self.plans.get(key)
        out = None if kept is None else triton_launch.replay(kept, x, weight, bias)
        if out is not None:
            return out
        out = self.conv(x, weight, bias, stride, padding, dilation)
        if not (triton_launch.ENABLED and triton_launch.PLANS):     # no Plans kept: nothing to look up
            return out
        kept = self.k.kept_plan(x, weight, bias, stride, padding, dilation)
        if kept is not None:
            if len(self.plans) >= 16:           # alignments x weights x switches: a handful
                self.plans.clear()
            self.plans[key] = kept
        return out


def _conv1d(k, x, weight, bias, stride, padding, dilation, activation=None):
    """conv1d with its kernel module `k` (device and dtypes checked)."""
    bias = _contiguous_bias(bias)
    if not fused_autograd.needs_grad(x, weight, bias):        # inference: no closures, no node
        return k.dw_conv1d(x, weight, bias, stride, padding, dilation, activation)

    def reference(x, weight, bias):
        from . import slice_sum
        out = slice_sum.conv1d(x, weight, bias, stride, padding, dilation)
        return torch.nn.functional.silu(out) if activation == "silu" else out

    kernel = lambda x, weight, bias: k.dw_conv1d(x, weight, bias, stride, padding, dilation, activation)
    return fused_autograd.FusedKernel.apply(kernel, reference, x, weight, bias)


def _conv2d(k, x, weight, bias, stride, padding, dilation):
    """conv2d with its kernel module `k` (device and dtypes checked)."""
    bias = _contiguous_bias(bias)
    if not fused_autograd.needs_grad(x, weight, bias):
        return k.dw_conv2d(x, weight, bias, stride, padding, dilation)

    def reference(x, weight, bias):
        from . import slice_sum
        return slice_sum.conv2d(x, weight, bias, stride, padding, dilation)

    kernel = lambda x, weight, bias: k.dw_conv2d(x, weight, bias, stride, padding, dilation)
    return fused_autograd.FusedKernel.apply(kernel, reference, x, weight, bias)


def conv1d_decode_step(x_new: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None = None,
                       activation: str | None = None) -> torch.Tensor:
    """One causal step: x_new (B, C), conv_state (B, C, K-1) shifted in place -> (B, C). One launch.
    Under autograd/forward AD differentiable in every input, conv_state's old and new values too
    (fused_autograd.with_state; backward: the reference's)."""
    k = _kernels("triton_decode", x_new, conv_state, weight, bias)
    bias = _contiguous_bias(bias)
    if not fused_autograd.needs_grad(x_new, conv_state, weight, bias):
        return k.dw_conv1d_decode_step(x_new, conv_state, weight, bias, activation)

    def reference(state, x_new, weight, bias):
        from .short_conv import conv1d_decode_step_reference
        return conv1d_decode_step_reference(x_new, state, weight, bias, activation=activation)

    kernel = lambda state, x_new, weight, bias: k.dw_conv1d_decode_step(x_new, state, weight, bias, activation)
    return fused_autograd.with_state(kernel, reference, conv_state, x_new, weight, bias)


def short_conv_block(bcx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     conv_state: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """LFM2 gated short conv, bcx (B, L, 3C) -> y (B, L, C); conv_state updated in place. One launch.
    Under autograd/forward AD differentiable in bcx, weight, bias and conv_state (old and new)."""
    k = _kernels("triton_short_conv", bcx, weight, bias, conv_state)
    bias = _contiguous_bias(bias)
    if not fused_autograd.needs_grad(bcx, conv_state, weight, bias):
        return k.short_conv_block(bcx, weight, bias, conv_state, mask)
    from .short_conv import short_conv_block_reference
    if conv_state is None:
        reference = lambda bcx, weight, bias: short_conv_block_reference(bcx, weight, bias, mask=mask)
        kernel = lambda bcx, weight, bias: k.short_conv_block(bcx, weight, bias, None, mask)
        return fused_autograd.FusedKernel.apply(kernel, reference, bcx, weight, bias)
    reference = lambda state, bcx, weight, bias: short_conv_block_reference(bcx, weight, bias, conv_state=state,
                                                                            mask=mask)
    kernel = lambda state, bcx, weight, bias: k.short_conv_block(bcx, weight, bias, state, mask)
    return fused_autograd.with_state(kernel, reference, conv_state, bcx, weight, bias)
