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
        outs.append(F.conv1d(x[:, g:g + 1], w_g, b_g, stride, left, dilation))
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
    outs = []
    for g in range(C):
        w_g = weight[g * m:(g + 1) * m]                    # (m, 1, KH, KW)
        b_g = None if bias is None else bias[g * m:(g + 1) * m]
        outs.append(F.conv2d(xp[:, g:g + 1], w_g, b_g, stride, (top, left), dilation))
    return match_memory_format(torch.cat(outs, dim=1), x)
