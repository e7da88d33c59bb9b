"""The `per_group` impl: the deliberate "before" baseline.

A framework that lowers a grouped conv as `groups` independent single-group convolutions
plus a concatenation (candle before PR #3531, see seeds/) launches O(C) tiny kernels:
for each input channel g, one F.conv1d/F.conv2d on the (B, 1, ...) slice with that
channel's m filters, then one torch.cat. Kept on purpose so before/after is measurable;
never pick it for speed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .native import run_conv          # torch's CPU float16/bfloat16 convs: in float32 (see there)
from .spec import match_memory_format


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
           padding: tuple[int, int], dilation: int) -> torch.Tensor:
    """x (B, C, L), weight (C*m, 1, K) -> (B, C*m, L_out) via C convs + cat."""
    C = x.shape[1]
    m = weight.shape[0] // C
    left, right = padding
    if left != right:
        x, left = F.pad(x, (left, right)), 0
    outs = []
    for g in range(C):                                     # one conv per group: O(C) launches
        w_g = weight[g * m:(g + 1) * m]                    # (m, 1, K): group g's filters
        b_g = None if bias is None else bias[g * m:(g + 1) * m]
        outs.append(run_conv(F.conv1d, x[:, g:g + 1], w_g, b_g, stride, left, dilation))
    return torch.cat(outs, dim=1)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           stride: tuple[int, int], padding: tuple[int, int, int, int],
           dilation: tuple[int, int]) -> torch.Tensor:
    """x (B, C, H, W), weight (C*m, 1, KH, KW) -> (B, C*m, H_out, W_out) via C convs + cat."""
    C = x.shape[1]
    m = weight.shape[0] // C
    top, bottom, left, right = padding
    xp = x
    if top != bottom or left != right:
        xp, (top, left) = F.pad(x, (left, right, top, bottom)), (0, 0)
    dense = _needs_dense_slices(xp, weight, stride, (top, left), dilation)
    outs = []
    for g in range(C):
        w_g = weight[g * m:(g + 1) * m]                    # (m, 1, KH, KW)
        b_g = None if bias is None else bias[g * m:(g + 1) * m]
        x_g = xp[:, g:g + 1].contiguous() if dense else xp[:, g:g + 1]
        outs.append(run_conv(F.conv2d, x_g, w_g, b_g, stride, (top, left), dilation))
    return match_memory_format(torch.cat(outs, dim=1), x)


def _needs_dense_slices(x, weight, stride, padding, dilation) -> bool:
    """torch's CPU conv (2.13, oneDNN) miscomputes a channel slice of a channels_last batch
    (B > 1, so the slice is dense in neither format) when an output side is 1 with a stride
    > 1 on that side: the property test in tests/test_depthwise_ops.py found it, e.g. x
    (2, 2, 4, 3) channels_last, 3x3, stride (1, 2). A dense copy of each slice sidesteps it;
    only those rare shapes pay for the copy, the baseline's other launch counts stay as they are."""
    g0 = x[:, :1]
    if x.shape[0] < 2 or g0.is_contiguous() or g0.is_contiguous(memory_format=torch.channels_last):
        return False
    for size, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation):
        if s > 1 and (size + 2 * p - d * (k - 1) - 1) // s + 1 == 1:
            return True
    return False
