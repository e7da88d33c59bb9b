"""The impl contextvar, `auto` resolution and the two public depthwise ops.

    current_impl() -> str            the policy for calls with impl=None (default "auto")
    use_impl(name)                   context manager setting it (a contextvar: thread/async safe)
    for_cuda_graphs()                calls inside are captured into CUDA graphs: auto by device time
    resolve_impl(op, x, weight, stride, padding, dilation, impl=None) -> concrete impl name
    depthwise_conv1d / depthwise_conv2d

Hot path (benchmarked at ~10 us): the public ops build one tuple key from the call's
shapes/dtypes/devices/arguments and look up a cache entry (impl function, resolved stride,
padding, dilation). Only a miss validates (spec.py) and resolves `auto`; a key holds
everything validation depends on, so a hit is a call already proven valid. Inside
torch.autocast the arguments are first cast as autocast casts F.conv's (`_autocast`). While
torch.compile traces a caller, `_traced_call` runs instead (no cache, no contextvar reads);
inside torch.func transforms, `_transformed_call` (no cache, plain-torch impls only).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib

import torch

from .. import profiling
from . import spec

IMPLS = ("per_group", "slice_sum", "compiled", "fused", "native")
POLICIES = IMPLS + ("auto",)
OPS = ("conv1d", "conv2d", "decode")
_MAX_CACHE = 4096            # distinct call signatures kept; cleared wholesale beyond (rare)

_IMPL: contextvars.ContextVar[str] = contextvars.ContextVar("dwserve_depthwise_impl", default="auto")
_GRAPHED: contextvars.ContextVar[bool] = contextvars.ContextVar("dwserve_depthwise_graphed", default=False)
_graphed_get = _GRAPHED.get  # bound once: the hot path reads it every call (~40 ns)
_AUTO: dict = {}             # (op, device type, dtype, x_shape, weight_shape, stride, padding, dilation,
                             #  channels_last, graphed) -> impl
_CALLS: dict = {}            # public-op call signature -> (fn, stride, padding, dilation)
_timer_get = profiling._TIMER.get   # bound once: the hot path reads it every call
# None outside torch.func transforms (vmap, grad, jvp, ...); ~50 ns
_functorch_level = getattr(torch._C._functorch, "peek_interpreter_stack", lambda: None)


def _check_policy(name) -> str:
    if name not in POLICIES:
        raise ValueError(f"impl must be one of {POLICIES} (or None for the current use_impl), got {name!r}")
    return name


def current_impl() -> str:
    """The impl policy for depthwise calls made with impl=None in this context."""
    return _IMPL.get()


@contextlib.contextmanager
def use_impl(name: str):
    """Make `name` (one of IMPLS or "auto") the default impl for depthwise calls inside.
    A contextvar: other threads and asyncio tasks keep their own value."""
    token = _IMPL.set(_check_policy(name))
    try:
        yield name
    finally:
        _IMPL.reset(token)


@contextlib.contextmanager
def for_cuda_graphs():
    """Depthwise calls inside are captured into a CUDA graph and replayed (models/graphed.py
    enters it around a capture's warm-up and the capture), so their host time is not paid:
    `auto` picks by device time there (auto.py's rule inside CUDA graphs; on CUDA NHWC 3x3
    layers that is the fused strip kernel in bfloat16). A contextvar, like use_impl."""
    token = _GRAPHED.set(True)
    try:
        yield
    finally:
        _GRAPHED.reset(token)


def clear_caches() -> None:
    """Forget cached auto decisions and call signatures (e.g. after changing the auto rule)."""
    _AUTO.clear()
    _CALLS.clear()


def _choose(op, device, dtype, x_shape, weight_shape, stride, dilation, channels_last, graphed=False,
            padding=None) -> str:
    try:
        from . import auto
    except ModuleNotFoundError as err:   # no rule module (yet): the framework conv always runs
        if err.name != f"{__package__}.auto":
            raise                        # auto.py exists but its own import failed: surface it
        return "native"
    name = auto.choose(op, device, dtype, x_shape, weight_shape, stride, dilation, channels_last=channels_last,
                       graphed=graphed, padding=padding)
    if name not in IMPLS:
        raise RuntimeError(f"auto.choose returned {name!r}, not one of {IMPLS}: fix models/depthwise/auto.py")
    return name


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def is_channels_last(x: torch.Tensor) -> bool:
    """x is a 4-d tensor laid out NHWC (torch.channels_last) and not also plain contiguous
    (a (B, C, 1, 1) tensor is both: it counts as contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def resolve_impl(op: str, x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation,
                 impl: str | None = None) -> str:
    """The concrete impl (one of IMPLS) a call runs: `impl`, else current_impl(); "auto" asks
    auto.choose once per (op, device type, dtype, shapes, stride, padding, dilation, layout,
    inside for_cuda_graphs() or not)."""
    name = _check_policy(impl if impl is not None else _IMPL.get())
    if name != "auto":
        return name
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    stride, padding, dilation = _hashable(stride), _hashable(padding), _hashable(dilation)
    key = (op, x.device.type, x.dtype, tuple(x.shape), tuple(weight.shape), stride, padding, dilation,
           is_channels_last(x), _graphed_get())
    try:
        return _AUTO[key]
    except KeyError:
        pass
    if len(_AUTO) >= _MAX_CACHE:
        _AUTO.clear()
    choice = _AUTO[key] = _choose(op, x.device, x.dtype, key[3], key[4], stride, dilation, key[8], key[9], padding)
    return choice


def _impl_fn(name: str, op: str):
    return getattr(importlib.import_module(f"{__package__}.{name}"), op)


def _cached_fn(name: str, op: str, x, weight, bias):
    """The impl's op for a call-cache entry: its `cached_op(op, x, weight, bias)` where it has
    one (fused: its per-call checks read only what the key holds, so they run here, once),
    else the op itself."""
    module = importlib.import_module(f"{__package__}.{name}")
    cached = getattr(module, "cached_op", None)
    return cached(op, x, weight, bias) if cached is not None else getattr(module, op)


def _prepare(op, key, x, weight, bias, stride, padding, dilation, policy):
    """Cache miss: validate, resolve padding and impl, and cache the entry under `key`."""
    check = spec.conv1d_spec if op == "conv1d" else spec.conv2d_spec
    s, p, d = check(x, weight, bias, stride, padding, dilation)
    name = resolve_impl(op, x, weight, s, p, d, policy)
    entry = (_cached_fn(name, op, x, weight, bias), s, p, d)
    if key is not None:
        if len(_CALLS) >= _MAX_CACHE:
            _CALLS.clear()
        _CALLS[key] = entry
    return entry


def _typed(arg):
    """arg with the types of its parts, for the call cache's key: True == 1 and 1.0 == 1 hash
    alike, so without them a call with stride=True would hit the entry of a valid stride=1 call
    and skip the validation that rejects it."""
    if type(arg) is tuple:
        return (tuple, tuple(map(type, arg)), arg)
    return (type(arg), arg)


def _autocast(x, weight, bias):
    """F.conv's autocast policy, applied before any impl runs: conv1d/conv2d are on autocast's
    lower-precision list (CUDA and CPU), so inside torch.autocast for x's device every float32/
    float16/bfloat16 tensor argument is cast (differentiably) to the autocast dtype; float64
    is left alone. The impls are elementwise torch ops (slice_sum) or Triton (fused), which
    autocast does not cast, so without this the output dtype would depend on the impl and
    bfloat16 activations meeting a module's float32 parameters would be refused."""
    if not isinstance(x, torch.Tensor) or not torch.is_autocast_enabled(x.device.type):
        return x, weight, bias
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev)

    def cast(t):
        eligible = (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
                    and t.device.type == dev)
        return t.to(dtype) if eligible else t

    return cast(x), cast(weight), cast(bias)


@torch.compiler.assume_constant_result
def _policy_at_trace() -> str:
    """current_impl() for _traced_call: dynamo cannot trace ContextVar.get, so it calls this
    once while tracing and keeps the answer in the graph."""
    return _IMPL.get()


def _graph_break(reason: str):
    """torch.compiler.disable, with the reason fullgraph=True's error shows where torch takes
    one (2.8+); older torch (the pin admits 2.4) has no `reason` keyword."""
    try:
        return torch.compiler.disable(reason=reason)
    except TypeError:
        return torch.compiler.disable


@_graph_break("impl='fused' launches a Triton kernel eagerly, behind a graph break; for "
              "fullgraph=True use impl='slice_sum' (the compiled graph generates its loop) or 'native'")
def _fused_eager(op, x, weight, bias, stride, padding, dilation):
    """The fused impl inside a traced graph: a Triton launch through our autotune cache is not
    traceable, so it runs eagerly behind a graph break (its values and gradients as eager)."""
    return _impl_fn("fused", op)(x, weight, bias, stride, padding, dilation)


def _traced_call(op, x, weight, bias, stride, padding, dilation, impl):
    """The public op while torch.compile / torch.export trace a model that calls it. Same
    validation and impls, but traceable without graph breaks: no call cache, no depthwise
    timer, and the policy read once, at trace time (a later use_impl() does not retrace; the
    values are the same whichever impl runs, and modules built with impl= are not affected).
    `compiled` is slice_sum traced into the user's graph (the outer compile generates its
    loop); `auto` keeps its rule, except that its fused pick becomes that generated kernel
    too, so `auto` never breaks the graph. An explicit impl="fused" runs eagerly (_fused_eager)."""
    x, weight, bias = _autocast(x, weight, bias)
    policy = _check_policy(impl if impl is not None else _policy_at_trace())
    name, s, p, d = _checked(op, x, weight, bias, stride, padding, dilation, policy)
    if policy == "fused":
        return _fused_eager(op, x, weight, bias, s, p, d)
    return _plain_impl(name, op)(x, weight, bias, s, p, d)


def _checked(op, x, weight, bias, stride, padding, dilation, policy: str):
    """The uncached calls' validation and resolution (traced, transformed): -> (impl name:
    the policy, or auto's pick by its rule; stride, padding, dilation as spec.py resolves them)."""
    check = spec.conv1d_spec if op == "conv1d" else spec.conv2d_spec
    s, p, d = check(x, weight, bias, stride, padding, dilation)
    name = policy
    if name == "auto":
        name = _choose(op, x.device, x.dtype, tuple(x.shape), tuple(weight.shape), s, d, is_channels_last(x),
                       padding=p)
    return name, s, p, d


def _plain_impl(name: str, op: str):
    """The plain-torch impl for `name`: per_group, native, else slice_sum (compiled and fused
    compute slice_sum's sum)."""
    from . import native, per_group, slice_sum
    return getattr({"per_group": per_group, "native": native}.get(name, slice_sum), op)


_TRANSFORM_ERROR = ("impl={!r} cannot run inside a torch.func transform (vmap, grad, jvp, ...): its "
                    "tensors are functorch wrappers, which {} cannot take; use impl='slice_sum' or "
                    "'native' (or 'auto') there")
NO_TRANSFORM = ("fused", "compiled")   # impls that cannot take functorch wrappers


def under_transform(policy: str, name: str) -> str:
    """The impl a call resolved to `name` under `policy` runs inside a torch.func transform:
    auto's fused/compiled pick becomes slice_sum (the same sum); an explicit one is a ValueError."""
    if name not in NO_TRANSFORM:
        return name
    if policy != "auto":
        raise ValueError(_TRANSFORM_ERROR.format(name, "a Triton kernel" if name == "fused"
                                                 else "a torch.compile'd function"))
    return "slice_sum"


def _transformed_call(op, x, weight, bias, stride, padding, dilation, impl):
    """The public op inside torch.func transforms. The arguments are functorch wrappers (no
    storage): a Triton kernel cannot read them and a torch.compile'd callable refuses them, so
    `auto` keeps its rule but runs slice_sum where it would pick fused or compiled (the same
    sum), and an explicit fused/compiled is a ValueError saying what to use. No call cache: a
    wrapper's key is that of an eager call with one sample's shape, whose entry may be fused."""
    x, weight, bias = _autocast(x, weight, bias)
    policy = _check_policy(impl if impl is not None else _IMPL.get())
    under_transform(policy, policy)             # an explicit fused/compiled: the ValueError
    name, s, p, d = _checked(op, x, weight, bias, stride, padding, dilation, policy)
    return _plain_impl(name, op)(x, weight, bias, s, p, d)


def _call(op, x, weight, bias, stride, padding, dilation, impl):
    if torch.compiler.is_compiling():          # ~0.1 us; True only while dynamo traces this call
        return _traced_call(op, x, weight, bias, stride, padding, dilation, impl)
    if _functorch_level() is not None:         # ~0.05 us; None outside torch.func transforms
        return _transformed_call(op, x, weight, bias, stride, padding, dilation, impl)
    if torch._C._is_any_autocast_enabled():     # ~0.1 us; False outside torch.autocast
        x, weight, bias = _autocast(x, weight, bias)
    policy = impl if impl is not None else _IMPL.get()
    try:   # everything spec.py's verdict and auto's answer depend on (x's layout, graphs), and the policy
        key = (op, policy, _graphed_get(), x.shape, x.stride(), x.dtype, x.device,
               weight.shape, weight.dtype, weight.device,
               None if bias is None else (bias.shape, bias.dtype, bias.device),
               stride if type(stride) is int else _typed(stride),      # ints, the common case, as they are
               padding if type(padding) is int else _typed(padding),
               dilation if type(dilation) is int else _typed(dilation))
        entry = _CALLS[key]
    except KeyError:
        entry = _prepare(op, key, x, weight, bias, stride, padding, dilation, policy)
    except (TypeError, AttributeError):   # unhashable argument (a list) or not a tensor: no caching
        entry = _prepare(op, None, x, weight, bias, stride, padding, dilation, policy)
    fn, s, p, d = entry
    if _timer_get() is None:              # no depthwise_timer active: nothing else to do
        return fn(x, weight, bias, s, p, d)
    with profiling.record_depthwise(x.device):
        return fn(x, weight, bias, s, p, d)


def depthwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                     stride=1, padding=0, dilation=1, impl: str | None = None) -> torch.Tensor:
    """Depthwise conv1d with PyTorch semantics: x (B, C, L), weight (C*m, 1, K), bias (C*m,)
    -> (B, C*m, L_out), equal to F.conv1d(..., groups=C). padding: int, (p,), (left, right),
    "valid", "same" or "causal" (left dilation*(K-1)). impl: one of IMPLS, "auto", or None for
    current_impl()."""
    return _call("conv1d", x, weight, bias, stride, padding, dilation, impl)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                     stride=1, padding=0, dilation=1, impl: str | None = None) -> torch.Tensor:
    """Depthwise conv2d with PyTorch semantics: x (B, C, H, W) (channels_last accepted and kept),
    weight (C*m, 1, KH, KW), bias (C*m,) -> (B, C*m, H_out, W_out), equal to
    F.conv2d(..., groups=C). padding: int, (ph, pw), (top, bottom, left, right), "valid" or "same"."""
    return _call("conv2d", x, weight, bias, stride, padding, dilation, impl)
