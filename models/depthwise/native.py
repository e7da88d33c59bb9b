"""The `native` impl: the framework's own grouped convolution, F.conv1d/F.conv2d(groups=C).

On CUDA this is cuDNN (or ATen's depthwise kernels), on CPU oneDNN/ATen. Padding arrives
explicit per side (spec.py); symmetric padding is passed to the conv, asymmetric padding
("same" with an even kernel, "causal") is applied with one F.pad first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .spec import match_memory_format


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: tuple[int, int], dilation: int) -> torch.Tensor:
    """x (B, C, L), weight (C*m, 1, K) -> (B, C*m, L_out)."""
    left, right = padding
    if left != right:
        x, left = F.pad(x, (left, right)), 0
    return F.conv1d(x, weight, bias, stride, left, dilation, groups=x.shape[1])


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> torch.Tensor:
    """x (B, C, H, W) NCHW or channels_last, weight (C*m, 1, KH, KW) -> (B, C*m, H_out, W_out)."""
    top, bottom, left, right = padding
    xp = x
    if top != bottom or left != right:
        xp, (top, left) = F.pad(x, (left, right, top, bottom)), (0, 0)   # F.pad: last dim first
    out = F.conv2d(xp, weight, bias, stride, (top, left), dilation, groups=x.shape[1])
    return match_memory_format(out, x)
