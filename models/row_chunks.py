"""Run a stack of row-independent stages over a batch in cache-sized chunks of rows.

Why: on a few CPU cores a batched MobileNetV2 forward is memory-bound in its early stages.
At 224x224 the first expand conv writes 112*112*96 floats (4.8 MB) per image, so a batch of
8 streams ~38 MB through DRAM per layer, where one image stays in cache. Measured on a
2-core x86 machine (torch 2.13, fp32, NHWC): stage 2 costs 1.5 ms per row at batch 1 and
4.7 ms per row at batch 8, while the late stages (7x7 and 14x14 maps, big weights) cost
~0.3-0.6 ms per row at batch 8 against 0.7-1.1 ms at batch 1. Whole-batch forwards were no
cheaper per row than batch 1 (1.0-1.4x); running each stage over chunks of rows that fit
the budget and the late stages over the whole batch made a batch-8 row ~2x cheaper.

Rows must be independent, which holds for an eval-mode CNN (BatchNorm uses running stats).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .depthwise import DepthwiseConv2d

# Activation bytes per chunk and stage. Swept on the machine above (batches 8 and 16,
# interleaved medians): 8 MiB best (batch-8 row 2.1x cheaper than batch 1), 16 MiB close,
# 4 MiB 1.7-1.8x, 2 MiB and 32 MiB no better than whole batches. benchmarks/row_chunks.py.
CPU_ROW_CHUNK_BYTES = 8 << 20


def chunk_plan(row_bytes: Sequence[int], batch: int, budget: int) -> list[tuple[int, int, int]]:
    """Stages [start, stop) and rows per chunk for each run of stages sharing a chunk size.

    row_bytes[i]: activation bytes stage i touches per row (its largest layer's input +
    output). A stage gets the largest power-of-two number of rows whose bytes fit `budget`
    (at least 1, at most `batch`); consecutive stages with equal chunk sizes form one
    segment, so rows are split and concatenated only where the chunk size changes."""
    if batch < 1 or budget < 1:
        raise ValueError(f"expected batch >= 1 and budget >= 1 byte, got {batch} and {budget}")
    plan: list[tuple[int, int, int]] = []
    for i, nbytes in enumerate(row_bytes):
        fit = max(1, budget // max(1, int(nbytes)))
        rows = min(batch, 1 << (fit.bit_length() - 1))      # a power of two: even, regular chunks
        if plan and plan[-1][2] == rows:
            plan[-1] = (plan[-1][0], i + 1, rows)
        else:
            plan.append((i, i + 1, rows))
    return plan


def run_chunked(stages: nn.Sequential, x: torch.Tensor, plan: list[tuple[int, int, int]]
                ) -> torch.Tensor:
    """x (B, ...) through stages[0:n] following `plan` (chunk_plan); equal to stages(x).

    The batch travels as a list of row pieces: a segment with a smaller chunk splits them
    (views, no copy); only a segment with a larger chunk concatenates, and by then the
    activations are small."""
    pieces = [x]
    for start, stop, rows in plan:
        segment = stages[start:stop]
        pieces = [segment(p) for p in _regroup(pieces, rows)]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _regroup(pieces: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
    """The same rows in order, as pieces of `rows` rows (the last may have fewer)."""
    parts = [q for p in pieces for q in (p.split(rows) if p.shape[0] > rows else (p,))]
    out: list[torch.Tensor] = []
    group: list[torch.Tensor] = []
    filled = 0                                  # rows in `group`
    for part in parts:
        if group and filled + part.shape[0] > rows:
            out.append(group[0] if len(group) == 1 else torch.cat(group))
            group, filled = [], 0
        group.append(part)
        filled += part.shape[0]
    if group:
        out.append(group[0] if len(group) == 1 else torch.cat(group))
    return out


def conv_stage_row_bytes(stages: nn.Sequential, height: int, width: int, itemsize: int
                         ) -> list[int]:
    """Per stage of a conv stack: bytes of the largest conv's input + output for one row of
    a (height, width) input. Assumes 'same'-style padding, so a stride s maps h to ceil(h/s),
    as in MobileNetV2."""
    out: list[int] = []
    h, w = height, width
    for stage in stages:
        peak = 0
        for conv in stage.modules():
            if not isinstance(conv, (nn.Conv2d, DepthwiseConv2d)):
                continue
            sh, sw = conv.stride                      # both conv classes keep a (sh, sw) tuple
            oh, ow = -(-h // sh), -(-w // sw)
            peak = max(peak, (conv.in_channels * h * w + conv.out_channels * oh * ow) * itemsize)
            h, w = oh, ow
        out.append(peak)
    return out
