"""nn.Modules over the depthwise ops, state_dict-compatible with nn.Conv1d/2d(groups=C).

    DepthwiseConv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                    bias=True, impl=None, device=None, dtype=None)      # out_channels = C*m
    DepthwiseConv2d(...)                                                # same, 2d
    DepthwiseConv1d.from_conv(conv) / DepthwiseConv2d.from_conv(conv)   # shares conv's parameters
    convert_depthwise(module, impl=None) -> int                         # swap in place, count

Parameters are `weight` (C*m, 1, *kernel) and `bias` (C*m,) exactly as in nn.Conv, and are
initialised the same way, so a checkpoint of either loads into the other. impl=None follows
use_impl() at call time.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import spec
from .dispatch import POLICIES, _check_policy, depthwise_conv1d, depthwise_conv2d


def _tuple(v, n: int) -> tuple[int, ...]:
    """An int (numpy's too) or a sequence of them, already validated by spec -> Python ints."""
    return (int(v),) * n if spec._is_int(v) else tuple(int(i) for i in v)


class _DepthwiseConvNd(nn.Module):
    _dims = 1
    _op = None

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, impl: str | None = None, device=None, dtype=None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an int, got {v!r}")
        if in_channels < 1 or out_channels < in_channels or out_channels % in_channels:
            raise ValueError(f"out_channels must be a positive multiple C*m of in_channels C={in_channels} "
                             f"(depthwise, channel multiplier m >= 1), got {out_channels}")
        if impl is not None:
            _check_policy(impl)
        self.in_channels, self.out_channels = in_channels, out_channels
        # Checked here as the op would check them at the first forward (spec.py), so a module
        # that can never run fails where it is built.
        n = self._dims
        self.kernel_size = spec._ints("kernel_size", kernel_size, n, 1)
        self.stride, self.dilation = spec._ints("stride", stride, n, 1), spec._ints("dilation", dilation, n, 1)
        spec._padding(padding, f"conv{n}d", self.kernel_size, self.dilation, self.stride)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, n)
        self.groups, self.impl = in_channels, impl
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, 1, *self.kernel_size, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv's default init (kaiming_uniform(a=sqrt(5)), bias U(-1/sqrt(fan_in), ..))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(math.prod(self.kernel_size))      # fan_in = 1 * prod(kernel)
            nn.init.uniform_(self.bias, -bound, bound)

    def _stride(self):
        return self.stride[0] if self._dims == 1 else self.stride

    def _dilation(self):
        return self.dilation[0] if self._dims == 1 else self.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The op alone would take any C dividing out_channels (another channel multiplier);
        # nn.Conv(groups=in_channels), which this module stands in for, takes in_channels only.
        if isinstance(x, torch.Tensor) and x.dim() == self._dims + 2 and x.shape[1] != self.in_channels:
            dims = "L" if self._dims == 1 else "H, W"
            raise ValueError(f"{type(self).__name__} with in_channels={self.in_channels} needs x "
                             f"(B, {self.in_channels}, {dims}), got {tuple(x.shape)}")
        return type(self)._op(x, self.weight, self.bias, stride=self._stride(), padding=self.padding,
                              dilation=self._dilation(), impl=self.impl)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}, impl={self.impl}")

    @classmethod
    def from_conv(cls, conv: nn.Module, impl: str | None = None):
        """A depthwise module sharing `conv`'s weight/bias Parameters (no copy)."""
        want = nn.Conv1d if cls._dims == 1 else nn.Conv2d
        if not is_depthwise_conv(conv) or not isinstance(conv, want):
            raise ValueError(f"{cls.__name__}.from_conv needs a depthwise {want.__name__} "
                             f"(groups == in_channels, padding_mode='zeros'), got {conv!r}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_channels, new.out_channels = conv.in_channels, conv.out_channels
        new.kernel_size, new.stride, new.dilation = conv.kernel_size, conv.stride, conv.dilation
        new.padding, new.groups, new.impl = conv.padding, conv.groups, impl
        if impl is not None:
            _check_policy(impl)
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new


class DepthwiseConv1d(_DepthwiseConvNd):
    """Depthwise nn.Conv1d(C, C*m, K, groups=C) over depthwise_conv1d; padding also "causal"."""
    _dims = 1
    _op = staticmethod(depthwise_conv1d)


class DepthwiseConv2d(_DepthwiseConvNd):
    """Depthwise nn.Conv2d(C, C*m, (KH, KW), groups=C) over depthwise_conv2d."""
    _dims = 2
    _op = staticmethod(depthwise_conv2d)


def is_depthwise_conv(module: nn.Module) -> bool:
    """A plain nn.Conv1d/2d with groups == in_channels (so one input channel per filter), zeros
    padding. Exactly those classes, unparametrized and unhooked: a subclass may change forward
    (weight standardisation, QAT's ConvBn2d with its BatchNorm), a parametrization (weight_norm)
    computes the weight, and hooks would be lost with the module; replacing any of them would
    change what the model computes."""
    return (type(module) in (nn.Conv1d, nn.Conv2d)
            and not torch.nn.utils.parametrize.is_parametrized(module)
            and not (module._forward_hooks or module._forward_pre_hooks)
            and not isinstance(module.weight, nn.parameter.UninitializedParameter)   # lazy, unbuilt
            and module.groups == module.in_channels and module.padding_mode == "zeros"
            and not getattr(module, "transposed", False))


def convert_depthwise(module: nn.Module, impl: str | None = None) -> int:
    """Replace every depthwise nn.Conv1d/2d inside `module` (not `module` itself) by a
    DepthwiseConv1d/2d sharing its parameters; returns how many were replaced."""
    if impl is not None and impl not in POLICIES:
        _check_policy(impl)
    # id(conv) -> (conv, its replacement): a conv reached under two names (a shared, tied
    # module) becomes one shared replacement; named_children() would skip the second name.
    swapped: dict[int, tuple[nn.Module, nn.Module]] = {}
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and is_depthwise_conv(child):
                if id(child) not in swapped:
                    cls = DepthwiseConv1d if isinstance(child, nn.Conv1d) else DepthwiseConv2d
                    swapped[id(child)] = (child, cls.from_conv(child, impl=impl))
                setattr(parent, name, swapped[id(child)][1])
    return len(swapped)
