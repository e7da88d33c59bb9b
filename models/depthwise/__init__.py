"""Depthwise convolution ops with selectable implementations (DESIGN.md "Depthwise operators").

    depthwise_conv1d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, impl=None)
    depthwise_conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, impl=None)
    IMPLS = ("per_group", "slice_sum", "compiled", "fused", "native")   # plus the policy "auto"
    use_impl(name), current_impl()
    DepthwiseConv1d, DepthwiseConv2d, convert_depthwise
    short_conv_block, conv1d_decode_step                              # LFM2's gated short conv

One file per impl (per_group.py, slice_sum.py, compiled.py, fused.py, native.py), all with
the contract of docs/ARCHITECTURE.md; spec.py validates, dispatch.py picks.
"""
from .dispatch import (IMPLS, current_impl, depthwise_conv1d, depthwise_conv2d, resolve_impl,
                       use_impl)
from .modules import DepthwiseConv1d, DepthwiseConv2d, convert_depthwise

try:  # the short-conv block lives in its own module (Triton teammate); optional until it lands
    from .short_conv import conv1d_decode_step, short_conv_block
except ImportError as _exc:  # pragma: no cover - only while short_conv.py is missing
    _SHORT_CONV_ERROR = _exc

    def short_conv_block(*args, **kwargs):
        raise RuntimeError(f"models.depthwise.short_conv is unavailable: {_SHORT_CONV_ERROR}")

    def conv1d_decode_step(*args, **kwargs):
        raise RuntimeError(f"models.depthwise.short_conv is unavailable: {_SHORT_CONV_ERROR}")

__all__ = ["IMPLS", "current_impl", "depthwise_conv1d", "depthwise_conv2d", "resolve_impl",
           "use_impl", "DepthwiseConv1d", "DepthwiseConv2d", "convert_depthwise",
           "short_conv_block", "conv1d_decode_step"]
