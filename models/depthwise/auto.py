"""The `auto` policy: pick a concrete depthwise impl from device, dtype and shape.

`choose(op, device, dtype, x_shape, weight_shape, stride, dilation) -> str` is called by
`dispatch.resolve_impl`, which caches the answer per (op, device type, dtype, shape), so
this may take microseconds but must be deterministic, and it must only return an impl
that runs on `device`: on CPU one of CPU_CHOICES (never fused, never per_group).

op "decode" is `conv1d_decode_step`: x_shape is the (B, C, 1) new column.
The CPU rule below is derived from CPU_MEASURED, the committed benchmark; test_auto.py checks
it picks within 5% of the best impl on every row, and test_benchmark_results.py checks the
committed JSON was produced by this rule.
"""
from __future__ import annotations

import functools
import math

import torch

OPS = ("conv1d", "conv2d", "decode")
CPU_CHOICES = ("slice_sum", "compiled", "native")

# ---------------------------------------------------------------- measured CPU numbers
# Copied from benchmarks/results/ops-cpu.json by `ops.auto_table` (AMD EPYC, 2 cores, 2 torch
# threads, torch 2.13, float32): median us per call through the public op. Rows:
# (shape name, op, x, weight, stride, {impl: median_us}); the winner is the smallest median.
# fmt: off
CPU_MEASURED: tuple = (
)
# fmt: on

# ---------------------------------------------------------------- the CPU rule
# In words (numbers in CPU_MEASURED):
# - decode (one new column): slice_sum. K tiny ops on (B, C) beat both a conv call (oneDNN
#   setup) and a compiled graph's guard/launch overhead.
# - conv1d, small work (<= SLICE_SUM_MAX_WORK multiply-adds: the seed shape, the channel
#   sweep, LFM2 short prompts): slice_sum, ~2K cheap ops, 1.5-3x ahead of native's fixed cost.
# - conv1d, K <= 4 with large work (LFM2 prefill batches, 4096-long short convs): compiled,
#   one generated loop = one pass over x instead of K.
# - conv1d, large K (conformer k=31): slice_sum; inductor's 31-tap loop and oneDNN's padded
#   depthwise path both measured 3-4x slower.
# - conv2d: native (oneDNN's depthwise 3x3/7x7 kernels win 2-10x) except big activations
#   (>= COMPILED_MIN_ELEMS input elements, MobileNetV2 early layers at batch 32), where the
#   compiled loop streams x once and wins.
SLICE_SUM_MAX_TAPS = 4          # conv1d K above which compiled stops paying off
SLICE_SUM_MAX_WORK = 1 << 21    # output elements * taps (~2M): above, compiled's single pass wins
COMPILED_MIN_ELEMS = 1 << 22    # conv2d input elements (~4M) from which compiled beats oneDNN


def _work(x_shape, weight_shape, stride) -> tuple[int, int]:
    """(taps, output elements * taps): the multiply-adds of one call, padding ignored."""
    taps = math.prod(weight_shape[2:])
    spatial = [max(1, n // stride) for n in x_shape[2:]]           # ~ output length / size
    out = x_shape[0] * weight_shape[0] * math.prod(spatial)
    return taps, out * taps


def _cpu_rule(op, x_shape, weight_shape, stride) -> str:
    taps, work = _work(x_shape, weight_shape, stride)
    if op == "decode":
        return "slice_sum"
    if op == "conv1d":
        if work <= SLICE_SUM_MAX_WORK or taps > SLICE_SUM_MAX_TAPS:
            return "slice_sum"
        return "compiled"
    return "compiled" if math.prod(x_shape) >= COMPILED_MIN_ELEMS else "native"


# ---------------------------------------------------------------- CUDA: provisional
# NOT MEASURED: no GPU was available when this rule was written; there are no GPU numbers
# behind it. Provisional rule: the fused Triton kernel (one launch) for small-K shapes, which
# are memory-bound and launch-bound, when triton imports; cuDNN (native) otherwise.
FUSED_MAX_TAPS = 9              # up to 3x3 / K=9; larger kernels are left to cuDNN


@functools.lru_cache(maxsize=1)
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install raising on import
        return False
    return True


def _cuda_rule(op, x_shape, weight_shape, stride) -> str:
    taps, _ = _work(x_shape, weight_shape, stride)
    if _triton_available() and (op == "decode" or taps <= FUSED_MAX_TAPS):
        return "fused"
    return "native"


def _check(op, dtype, x_shape, weight_shape) -> None:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    rank = 4 if op == "conv2d" else 3
    if len(x_shape) != rank:
        raise ValueError(f"x_shape for {op} must have {rank} dims "
                         f"({'(B, C, H, W)' if rank == 4 else '(B, C, L)'}), got {tuple(x_shape)}")
    if len(weight_shape) != rank:
        raise ValueError(f"weight_shape for {op} must have {rank} dims "
                         f"({'(C*m, 1, KH, KW)' if rank == 4 else '(C*m, 1, K)'}), got {tuple(weight_shape)}")


def choose(op, device, dtype, x_shape, weight_shape, stride, dilation) -> str:
    """The concrete impl `auto` resolves to. stride may be an int or a tuple (the first is used:
    the rule only needs the size of the output); dilation does not change the work."""
    _check(op, dtype, x_shape, weight_shape)
    s = stride[0] if isinstance(stride, (tuple, list)) else int(stride)
    dev_type = torch.device(device).type
    if dev_type == "cuda":
        return _cuda_rule(op, tuple(x_shape), tuple(weight_shape), s)
    if dev_type == "cpu":
        return _cpu_rule(op, tuple(x_shape), tuple(weight_shape), s)
    return "native"              # other devices: only the framework's own conv is known to run
