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
import os
import shutil

import torch

OPS = ("conv1d", "conv2d", "decode")
CPU_CHOICES = ("slice_sum", "compiled", "native")

# ---------------------------------------------------------------- measured CPU numbers
# Copied from benchmarks/results/ops-cpu.json by `python benchmarks/ops.py --auto-table`
# (AMD EPYC, 2 cores shared with a busy team, so: 1 torch thread, --clock thread_cpu; torch
# 2.13, float32): median us per call through the public op. Rows: (shape name, op, x, weight,
# stride, {impl: median_us}), comment: per_group's time and the winner (smallest median).
# fmt: off
CPU_MEASURED: tuple = (
    ('seed-c2048', 'conv1d', (1, 2048, 21), (2048, 1, 3), 1, dict(slice_sum=87.7, compiled=109.3, native=148.6)),  # per_group 19974 -> slice_sum
    ('sweep-c64', 'conv1d', (1, 64, 21), (64, 1, 3), 1, dict(slice_sum=49.0, compiled=89.7, native=104.8)),  # per_group 636 -> slice_sum
    ('sweep-c128', 'conv1d', (1, 128, 21), (128, 1, 3), 1, dict(slice_sum=50.4, compiled=83.1, native=104.9)),  # per_group 1237 -> slice_sum
    ('sweep-c256', 'conv1d', (1, 256, 21), (256, 1, 3), 1, dict(slice_sum=55.7, compiled=87.2, native=108.0)),  # per_group 2424 -> slice_sum
    ('sweep-c512', 'conv1d', (1, 512, 21), (512, 1, 3), 1, dict(slice_sum=55.6, compiled=83.2, native=108.6)),  # per_group 4836 -> slice_sum
    ('sweep-c1024', 'conv1d', (1, 1024, 21), (1024, 1, 3), 1, dict(slice_sum=69.1, compiled=96.9, native=123.9)),  # per_group 9721 -> slice_sum
    ('sweep-c4096', 'conv1d', (1, 4096, 21), (4096, 1, 3), 1, dict(slice_sum=120.7, compiled=121.0, native=181.6)),  # per_group 39876 -> slice_sum
    ('lfm2-350m-prefill-1x128', 'conv1d', (1, 1024, 128), (1024, 1, 3), 1, dict(slice_sum=178.7, compiled=323.0, native=252.9)),  # per_group 10432 -> slice_sum
    ('lfm2-350m-prefill-8x512', 'conv1d', (8, 1024, 512), (1024, 1, 3), 1, dict(slice_sum=7053.7, compiled=8151.3, native=21095.3)),  # per_group 108577 -> slice_sum
    ('lfm2-2.6b-short-1x19', 'conv1d', (1, 2048, 19), (2048, 1, 3), 1, dict(slice_sum=112.2, compiled=154.7, native=169.5)),  # per_group 19991 -> slice_sum
    ('decode-16x2048', 'decode', (16, 2048), (2048, 1, 3), 1, dict(slice_sum=384.6, compiled=418.9, native=498.8)),  # per_group 185891 -> slice_sum
    ('shortconv-long-1x4096x4096', 'conv1d', (1, 4096, 4096), (4096, 1, 4), 1, dict(slice_sum=106889.3, compiled=75091.9, native=184634.0)),  # per_group 160460 -> compiled
    ('conformer-k31-8x256x512', 'conv1d', (8, 256, 512), (256, 1, 31), 1, dict(slice_sum=4720.5, compiled=20021.3, native=24242.3)),  # per_group 43580 -> slice_sum
    ('mbv2-b1-c32@112', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, dict(slice_sum=784.1, compiled=1374.8, native=388.5)),  # per_group 1500 -> native
    ('mbv2-b1-c96@112-s2', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, dict(slice_sum=2927.6, compiled=3791.5, native=490.2)),  # per_group 7192 -> native
    ('mbv2-b1-c144@56', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, dict(slice_sum=1045.8, compiled=1538.1, native=423.2)),  # per_group 2826 -> native
    ('mbv2-b1-c144@56-s2', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, dict(slice_sum=1153.6, compiled=1643.6, native=273.3)),  # per_group 3555 -> native
    ('mbv2-b1-c192@28', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, dict(slice_sum=557.5, compiled=573.5, native=222.0)),  # per_group 2319 -> native
    ('mbv2-b1-c384@14', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, dict(slice_sum=545.0, compiled=277.5, native=177.7)),  # per_group 3872 -> native
    ('mbv2-b1-c576@14', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, dict(slice_sum=755.3, compiled=364.6, native=211.9)),  # per_group 5831 -> native
    ('mbv2-b1-c576@14-s2', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, dict(slice_sum=568.5, compiled=466.7, native=171.6)),  # per_group 5767 -> native
    ('mbv2-b1-c960@7', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, dict(slice_sum=717.3, compiled=191.3, native=161.8)),  # per_group 9142 -> native
    ('mbv2-b32-c32@112', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, dict(slice_sum=109272.7, compiled=71738.3, native=110745.2)),  # per_group 93819 -> compiled
    ('mbv2-b32-c96@112-s2', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, dict(slice_sum=335628.5, compiled=135505.5, native=171582.2)),  # per_group 88507 -> compiled
    ('mbv2-b32-c144@56', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 1, dict(slice_sum=135265.9, compiled=80742.1, native=128273.6)),  # per_group 117585 -> compiled
    ('mbv2-b32-c144@56-s2', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 2, dict(slice_sum=94101.5, compiled=46409.2, native=47235.8)),  # per_group 37595 -> compiled
    ('mbv2-b32-c192@28', 'conv2d', (32, 192, 28, 28), (192, 1, 3, 3), 1, dict(slice_sum=22538.0, compiled=16181.0, native=19227.7)),  # per_group 46785 -> compiled
    ('mbv2-b32-c384@14', 'conv2d', (32, 384, 14, 14), (384, 1, 3, 3), 1, dict(slice_sum=14863.3, compiled=6224.9, native=3486.2)),  # per_group 49664 -> native
    ('mbv2-b32-c576@14', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 1, dict(slice_sum=23161.2, compiled=9154.7, native=5520.3)),  # per_group 75139 -> native
    ('mbv2-b32-c576@14-s2', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 2, dict(slice_sum=21225.8, compiled=11610.1, native=3481.7)),  # per_group 59146 -> native
    ('mbv2-b32-c960@7', 'conv2d', (32, 960, 7, 7), (960, 1, 3, 3), 1, dict(slice_sum=20971.8, compiled=3394.6, native=2473.7)),  # per_group 99444 -> native
    ('convnext-7x7-1x96@56', 'conv2d', (1, 96, 56, 56), (96, 1, 7, 7), 1, dict(slice_sum=3253.0, compiled=6613.2, native=619.7)),  # per_group 12651 -> native
)
# fmt: on

# ---------------------------------------------------------------- the CPU rule
# In words (numbers in CPU_MEASURED):
# - decode (one new column): slice_sum. K tiny ops on (B, C) beat both a conv call (oneDNN
#   setup) and a compiled graph's guard/launch overhead.
# - conv1d up to SLICE_SUM_MAX_WORK multiply-adds (the seed shape, the channel sweep, LFM2
#   prompts and 8x512 prefill): slice_sum, ~2K cheap ops; native pays oneDNN's fixed cost
#   (1.5-3x slower) and compiled its guards (~+30 us) until the work is large.
# - conv1d, K <= 4 with more work than that (a 4096x4096 short conv): compiled, one generated
#   loop = one pass over x instead of K (1.4x ahead of slice_sum).
# - conv1d, large K (conformer k=31): slice_sum; inductor's 31-tap loop and oneDNN's padded
#   depthwise path (symmetric padding inside the conv) measured 4-5x slower.
# - conv2d: native (oneDNN's depthwise 3x3/7x7 kernels win 1.5-5x) except big outputs
#   (>= COMPILED_MIN_OUT elements: MobileNetV2's 112x112, stride-1 56x56 and 28x28 layers at
#   batch 32), where oneDNN slows down (and turns bimodal: 6-40 ms at b32 192@28, where
#   compiled is a steady 16 ms) and the compiled loop wins by 1.2-2.5x. 144@56 stride 2
#   (3.6M outputs) is a tie and stays native.
SLICE_SUM_MAX_TAPS = 4          # conv1d K above which compiled stops paying off
SLICE_SUM_MAX_WORK = 1 << 25    # output elements * taps (~33M), between 8x512 prefill (12.6M)
                                # where slice_sum wins and 1x4096x4096 K=4 (67M) where compiled does
COMPILED_MIN_OUT = 1 << 22      # conv2d output elements (~4.2M), between b32 144@56 s2 (3.6M,
                                # tie) and b32 192@28 (4.8M, compiled 1.3-2.5x ahead)


def _work(x_shape, weight_shape, stride) -> tuple[int, int, int]:
    """(taps, output elements, output elements * taps = multiply-adds), padding ignored."""
    taps = math.prod(weight_shape[2:])
    spatial = [max(1, n // stride) for n in x_shape[2:]]           # ~ output length / size
    out = x_shape[0] * weight_shape[0] * math.prod(spatial)
    return taps, out, out * taps


def compiled_allowed() -> bool:
    """Whether auto may pick `compiled` on CPU: inductor needs a C++ compiler, and
    DWSERVE_AUTO_COMPILED=0 opts out. Why opt out: compiled compiles once per shape class
    (seconds on 2 cores), so a server seeing many distinct big shapes (dynamic batch sizes,
    long prompts of varying length) pays that on the first request of each; the runner-up
    picks below are at most ~1.5x slower on the suite (CPU_MEASURED)."""
    if os.environ.get("DWSERVE_AUTO_COMPILED", "1").strip().lower() in ("0", "false", "no"):
        return False
    return _cxx_available()


@functools.lru_cache(maxsize=1)
def _cxx_available() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX") or "g++", "c++", "clang++"))


def _cpu_rule(op, x_shape, weight_shape, stride) -> str:
    taps, out, work = _work(x_shape, weight_shape, stride)
    if op == "decode":
        return "slice_sum"
    if op == "conv1d":
        if work <= SLICE_SUM_MAX_WORK or taps > SLICE_SUM_MAX_TAPS or not compiled_allowed():
            return "slice_sum"    # runner-up at 1x4096x4096: 1.4x behind compiled, native 2.4x
        return "compiled"
    if out >= COMPILED_MIN_OUT and compiled_allowed():
        return "compiled"
    return "native"               # runner-up on the big MobileNetV2 layers: up to 1.6x behind


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
    taps = _work(x_shape, weight_shape, stride)[0]
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
