"""The `native` impl: the framework's own grouped convolution, F.conv1d/F.conv2d(groups=C).

On CUDA this is cuDNN (or ATen's depthwise kernels), on CPU oneDNN/ATen. Padding arrives
explicit per side (spec.py); symmetric padding is passed to the conv, asymmetric padding
("same" with an even kernel, "causal") is applied with one F.pad first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .spec import match_memory_format

CPU_FLOAT32_DTYPES = (torch.float16, torch.bfloat16)   # run in float32 on CPU (run_conv)


def run_conv(conv, x, weight, bias, *args):
    """conv(x, weight, bias, *args): F.conv1d/F.conv2d, except that on CPU float16 and bfloat16
    run in float32 and round back once. torch 2.13's CPU convolutions crash (segfault) in float16
    and miscompute some small strided/dilated/padded shapes in bfloat16, depthwise and single-
    channel alike: tests/test_depthwise_ops.py's property test met both (e.g. float16 x (1, 1, 6, 1),
    w (2, 1, 3, 1), stride 2, padding 1, dilation (1, 2): a segfault; bfloat16 x (1, 1, 3, 1), 3x3,
    stride (1, 2), padding 2, dilation (1, 2): 57% off). float32 was right on every shape tried."""
    if x.device.type == "cpu" and x.dtype in CPU_FLOAT32_DTYPES:
        out = conv(x.float(), weight.float(), None if bias is None else bias.float(), *args)
        return out.to(x.dtype)
    return conv(x, weight, bias, *args)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: tuple[int, int], dilation: int) -> torch.Tensor:
    """x (B, C, L), weight (C*m, 1, K) -> (B, C*m, L_out)."""
    left, right = padding
    if left != right:
        x, left = F.pad(x, (left, right)), 0
    return run_conv(F.conv1d, x, weight, bias, stride, left, dilation, x.shape[1])


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> torch.Tensor:
    """x (B, C, H, W) NCHW or channels_last, weight (C*m, 1, KH, KW) -> (B, C*m, H_out, W_out)."""
    top, bottom, left, right = padding
    xp = x
    if top != bottom or left != right:
        xp, (top, left) = F.pad(x, (left, right, top, bottom)), (0, 0)   # F.pad: last dim first
    out = run_conv(F.conv2d, xp, weight, bias, stride, (top, left), dilation, x.shape[1])
    return match_memory_format(out, x)
