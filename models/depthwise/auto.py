"""The `auto` policy: pick a concrete depthwise impl from device, dtype and shape.

`choose(op, device, dtype, x_shape, weight_shape, stride, dilation) -> str` is called by
`dispatch.resolve_impl`, which caches the answer per (op, device type, dtype, shape), so
this may take microseconds but must be deterministic, and it must only return an impl
that runs on `device`: on CPU one of CPU_CHOICES (never fused).

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
CPU_CHOICES = ("per_group", "slice_sum", "compiled", "native")

# ---------------------------------------------------------------- measured CPU numbers
# Copied from benchmarks/results/ops-cpu.json by `python benchmarks/ops.py --auto-table`
# (AMD EPYC, 2 cores, quiet, torch's default 2 threads, wall clock, glibc keeping freed
# memory (models/allocator.py); torch 2.13, float32):
# median us per call through the public op. Rows: (shape name, op, x, weight, stride,
# channels_last, {impl: median_us}), comment: the winner (smallest median).
# fmt: off
CPU_MEASURED: tuple = (
    ('seed-c2048', 'conv1d', (1, 2048, 21), (2048, 1, 3), 1, False, dict(per_group=25552.4, slice_sum=53.7, compiled=90.3, native=131.3)),  # -> slice_sum
    ('sweep-c64', 'conv1d', (1, 64, 21), (64, 1, 3), 1, False, dict(per_group=797.3, slice_sum=26.6, compiled=72.1, native=102.3)),  # -> slice_sum
    ('sweep-c128', 'conv1d', (1, 128, 21), (128, 1, 3), 1, False, dict(per_group=1571.8, slice_sum=27.6, compiled=70.9, native=102.9)),  # -> slice_sum
    ('sweep-c256', 'conv1d', (1, 256, 21), (256, 1, 3), 1, False, dict(per_group=3127.2, slice_sum=30.1, compiled=74.1, native=104.9)),  # -> slice_sum
    ('sweep-c512', 'conv1d', (1, 512, 21), (512, 1, 3), 1, False, dict(per_group=6250.8, slice_sum=36.0, compiled=76.8, native=108.1)),  # -> slice_sum
    ('sweep-c1024', 'conv1d', (1, 1024, 21), (1024, 1, 3), 1, False, dict(per_group=12709.4, slice_sum=46.8, compiled=82.8, native=115.9)),  # -> slice_sum
    ('sweep-c4096', 'conv1d', (1, 4096, 21), (4096, 1, 3), 1, False, dict(per_group=50730.1, slice_sum=72.5, compiled=99.1, native=150.0)),  # -> slice_sum
    ('lfm2-350m-prefill-1x128', 'conv1d', (1, 1024, 128), (1024, 1, 3), 1, False, dict(per_group=12941.6, slice_sum=113.5, compiled=203.8, native=199.5)),  # -> slice_sum
    ('lfm2-350m-prefill-8x512', 'conv1d', (8, 1024, 512), (1024, 1, 3), 1, False, dict(per_group=99232.8, slice_sum=3255.5, compiled=4098.3, native=4045.7)),  # -> slice_sum
    ('lfm2-2.6b-short-1x19', 'conv1d', (1, 2048, 19), (2048, 1, 3), 1, False, dict(per_group=25184.3, slice_sum=73.8, compiled=120.6, native=154.7)),  # -> slice_sum
    ('decode-16x2048', 'decode', (16, 2048), (2048, 1, 3), 1, False, dict(per_group=171702.7, slice_sum=263.1, compiled=284.0, native=337.3)),  # -> slice_sum
    ('shortconv-long-1x4096x4096', 'conv1d', (1, 4096, 4096), (4096, 1, 4), 1, False, dict(per_group=142046.8, slice_sum=61765.9, compiled=39924.7, native=101237.5)),  # -> compiled
    ('conformer-k31-8x256x512', 'conv1d', (8, 256, 512), (256, 1, 31), 1, False, dict(per_group=32439.3, slice_sum=2328.4, compiled=9617.1, native=12092.1)),  # -> slice_sum
    ('mbv2-b1-c32@112', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, False, dict(per_group=1250.2, slice_sum=449.2, compiled=719.7, native=294.5)),  # -> native
    ('mbv2-b1-c96@112-s2', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, False, dict(per_group=4646.3, slice_sum=1385.4, compiled=1901.9, native=328.4)),  # -> native
    ('mbv2-b1-c144@56', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, False, dict(per_group=2736.4, slice_sum=552.7, compiled=768.0, native=266.4)),  # -> native
    ('mbv2-b1-c144@56-s2', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, False, dict(per_group=2992.5, slice_sum=626.0, compiled=851.5, native=209.2)),  # -> native
    ('mbv2-b1-c192@28', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, False, dict(per_group=2661.7, slice_sum=343.9, compiled=345.2, native=182.1)),  # -> native
    ('mbv2-b1-c384@14', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, False, dict(per_group=4733.9, slice_sum=337.1, compiled=194.9, native=149.9)),  # -> native
    ('mbv2-b1-c576@14', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, False, dict(per_group=7097.7, slice_sum=427.2, compiled=232.5, native=169.6)),  # -> native
    ('mbv2-b1-c576@14-s2', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, False, dict(per_group=6813.1, slice_sum=491.6, compiled=288.7, native=145.2)),  # -> native
    ('mbv2-b1-c960@7', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, False, dict(per_group=11300.8, slice_sum=434.3, compiled=164.1, native=146.2)),  # -> native
    ('mbv2-b32-c32@112', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, False, dict(per_group=69388.2, slice_sum=58951.9, compiled=38599.0, native=63983.1)),  # -> compiled
    ('mbv2-b32-c96@112-s2', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, False, dict(per_group=39834.4, slice_sum=174056.3, compiled=70876.6, native=93485.3)),  # -> per_group
    ('mbv2-b32-c144@56', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 1, False, dict(per_group=75421.1, slice_sum=70797.5, compiled=43115.8, native=71730.5)),  # -> compiled
    ('mbv2-b32-c144@56-s2', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 2, False, dict(per_group=28092.6, slice_sum=47799.0, compiled=23598.0, native=25630.0)),  # -> compiled
    ('mbv2-b32-c192@28', 'conv2d', (32, 192, 28, 28), (192, 1, 3, 3), 1, False, dict(per_group=33917.7, slice_sum=11141.0, compiled=8039.4, native=3198.1)),  # -> native
    ('mbv2-b32-c384@14', 'conv2d', (32, 384, 14, 14), (384, 1, 3, 3), 1, False, dict(per_group=45374.6, slice_sum=7502.1, compiled=3367.4, native=1663.6)),  # -> native
    ('mbv2-b32-c576@14', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 1, False, dict(per_group=65785.2, slice_sum=11859.5, compiled=4872.8, native=2886.6)),  # -> native
    ('mbv2-b32-c576@14-s2', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 2, False, dict(per_group=55810.0, slice_sum=9369.2, compiled=6023.1, native=1434.7)),  # -> native
    ('mbv2-b32-c960@7', 'conv2d', (32, 960, 7, 7), (960, 1, 3, 3), 1, False, dict(per_group=90356.7, slice_sum=10247.6, compiled=1684.0, native=1069.9)),  # -> native
    ('mbv2-b1-c32@112-cl', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=11379.7, slice_sum=1631.2, compiled=548.6, native=190.1)),  # -> native
    ('mbv2-b1-c96@112-s2-cl', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=10812.6, slice_sum=1316.7, compiled=488.9, native=191.1)),  # -> native
    ('mbv2-b1-c144@56-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=14032.5, slice_sum=1726.0, compiled=578.8, native=216.1)),  # -> native
    ('mbv2-b1-c144@56-s2-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=7661.2, slice_sum=611.1, compiled=259.2, native=134.6)),  # -> native
    ('mbv2-b1-c192@28-cl', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=8922.2, slice_sum=690.1, compiled=276.1, native=144.4)),  # -> native
    ('mbv2-b1-c384@14-cl', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=9248.7, slice_sum=392.7, compiled=175.5, native=113.9)),  # -> native
    ('mbv2-b1-c576@14-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=13999.2, slice_sum=518.8, compiled=229.4, native=139.8)),  # -> native
    ('mbv2-b1-c576@14-s2-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=10766.5, slice_sum=356.9, compiled=136.4, native=110.1)),  # -> native
    ('mbv2-b1-c960@7-cl', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=17218.3, slice_sum=314.4, compiled=152.6, native=108.7)),  # -> native
    ('mbv2-b8-c32@112-cl', 'conv2d', (8, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=24062.4, slice_sum=12541.5, compiled=3551.9, native=858.9)),  # -> native
    ('mbv2-b8-c96@112-s2-cl', 'conv2d', (8, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=40420.5, slice_sum=26833.2, compiled=4409.8, native=1360.2)),  # -> native
    ('mbv2-b8-c144@56-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=41879.9, slice_sum=13257.8, compiled=3924.6, native=1257.0)),  # -> native
    ('mbv2-b8-c144@56-s2-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=25429.2, slice_sum=4747.1, compiled=1444.5, native=469.5)),  # -> native
    ('mbv2-b8-c192@28-cl', 'conv2d', (8, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=26137.6, slice_sum=4359.8, compiled=1311.0, native=411.1)),  # -> native
    ('mbv2-b8-c384@14-cl', 'conv2d', (8, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=34483.3, slice_sum=2198.8, compiled=706.8, native=252.9)),  # -> native
    ('mbv2-b8-c576@14-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=52774.0, slice_sum=3202.1, compiled=1038.8, native=367.7)),  # -> native
    ('mbv2-b8-c576@14-s2-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=45791.1, slice_sum=1025.4, compiled=350.2, native=179.5)),  # -> native
    ('mbv2-b8-c960@7-cl', 'conv2d', (8, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=71577.4, slice_sum=1426.5, compiled=499.7, native=204.6)),  # -> native
    ('mbv2-b32-c32@112-cl', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=140734.2, slice_sum=86048.5, compiled=31817.7, native=21408.0)),  # -> native
    ('mbv2-b32-c96@112-s2-cl', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=188113.1, slice_sum=122308.4, compiled=23077.7, native=6577.1)),  # -> native
    ('mbv2-b32-c144@56-cl', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=128273.2, slice_sum=96107.5, compiled=37025.0, native=26820.2)),  # -> native
    ('mbv2-b32-c144@56-s2-cl', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=57749.3, slice_sum=49534.1, compiled=16452.8, native=3725.2)),  # -> native
    ('mbv2-b32-c192@28-cl', 'conv2d', (32, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=69745.5, slice_sum=20382.5, compiled=5719.1, native=2352.2)),  # -> native
    ('mbv2-b32-c384@14-cl', 'conv2d', (32, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=68538.5, slice_sum=9843.8, compiled=2917.9, native=1186.6)),  # -> native
    ('mbv2-b32-c576@14-cl', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=96735.5, slice_sum=14279.4, compiled=4310.5, native=1737.3)),  # -> native
    ('mbv2-b32-c576@14-s2-cl', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=79862.7, slice_sum=5198.3, compiled=1380.2, native=652.3)),  # -> native
    ('mbv2-b32-c960@7-cl', 'conv2d', (32, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=103050.8, slice_sum=5639.0, compiled=1752.4, native=627.2)),  # -> native
    ('convnext-7x7-1x96@56', 'conv2d', (1, 96, 56, 56), (96, 1, 7, 7), 1, False, dict(per_group=10467.5, slice_sum=1764.7, compiled=3378.7, native=366.6)),  # -> native
)
# fmt: on

# ---------------------------------------------------------------- the CPU rule
# In words (numbers in CPU_MEASURED):
# - decode (one new column), K <= DECODE_SLICE_SUM_MAX_TAPS: slice_sum. K tiny ops on (B, C)
#   beat both a conv call (oneDNN setup) and a compiled graph's guard/launch overhead (16x2048,
#   K=3: 1.17-1.28x ahead of both, on both CPUs).
# - decode, larger K (LFM3's K=7): native. slice_sum's cost grows ~45 us per tap at 16x2048,
#   native's and compiled's ~31 (Xeon, K=3 -> 7), so by K=7 slice_sum is 14% behind native
#   (382.5 vs 334.6 us, ops-cpu-xeon.md); native over compiled: within 3% of it or ahead, needs no
#   C++ compiler and no compile per decode batch size, which a continuous batch changes all
#   the time. (The served LFM2/LFM3 decode runs short_conv_block, op conv1d at L=1.)
# - conv1d up to SLICE_SUM_MAX_WORK multiply-adds (the seed shape, the channel sweep, LFM2
#   prompts and 8x512 prefill): slice_sum, ~2K cheap ops; native pays oneDNN's fixed cost
#   (1.5-3x slower) and compiled its guards (~+30 us) until the work is large.
# - conv1d, K <= 7 with more work than that (a 4096x4096 K=4 short conv; LFM3's K=7 8x512
#   prefill, measured on the Intel Xeon box: benchmarks/results/ops-cpu-xeon.md): compiled, one
#   generated loop = one pass over x instead of K (1.4-1.55x ahead of slice_sum at K=4, 1.16x
#   at K=7).
# - conv1d, large K (conformer k=31): slice_sum; inductor's 31-tap loop and oneDNN's padded
#   depthwise path (symmetric padding inside the conv) measured 4-5x slower (Xeon: 1.4x).
# - conv2d on channels_last (NHWC) input: native everywhere measured, batch 1 to 32 (oneDNN's
#   NHWC depthwise kernel: 1.4-4x ahead of compiled, 2-14x of slice_sum, whose slices are
#   strided in that layout). The served MobileNetV2 runs NHWC on CPU for this.
# - conv2d (NCHW): native (oneDNN's depthwise 3x3/7x7 kernels win 1.5-5x) except big batches on big
#   planes (>= COMPILED_MIN_OUT output elements from >= 56x56 inputs: MobileNetV2's 112x112 and
#   56x56 layers at batch 32), where oneDNN slows down and the compiled loop wins by 1.2-1.6x.
#   At 28x28 and below oneDNN wins again even at batch 32. One exception goes the other way,
#   on AMD CPUs only: stride-2 layers on 112x112 planes at batch >= 16, where per_group (C big
#   single-channel convs) is measured fastest on the AMD EPYC, so auto picks it there:
#   launches only hurt when each is tiny. On the Intel Xeon (ops-cpu-xeon.md) the same layer
#   goes to compiled, 1.08x ahead of per_group (53.5 vs 57.9 ms), which is what the general
#   rule picks; other vendors (unmeasured) get the general rule too.
DECODE_SLICE_SUM_MAX_TAPS = 5   # decode: the K=3 / K=7 lines above cross near K=6
SLICE_SUM_MAX_TAPS = 7          # conv1d K above which compiled stops paying off (K=31 loses)
SLICE_SUM_MAX_WORK = 1 << 25    # output elements * taps (~33M), between 8x512 prefill (12.6M)
                                # where slice_sum wins and 1x4096x4096 K=4 (67M) where compiled does
PER_GROUP_VENDORS = ("amd",)       # where the per_group exception below was measured to win
PER_GROUP_MIN_INPUT_HW = 112 * 112  # strided conv2d on planes this big, batch >= 16: oneDNN's
PER_GROUP_MIN_BATCH = 16            # single-channel strided conv beats its own grouped kernel and
                                    # the compiled strided loop (b32 96@112 s2: 56-73 ms vs 70 ms
                                    # compiled, 94 ms native); C launches of 100K outputs each are
                                    # nothing next to the work
COMPILED_MIN_OUT = 1 << 21      # conv2d output elements (~2.1M): batch-32 layers, not batch 1
COMPILED_MIN_INPUT_HW = 56 * 56 # and input planes of at least 56x56: at 28x28 and below
                                # oneDNN's depthwise kernel wins again (b32 192@28: 2.7x)


def _work(x_shape, weight_shape, stride) -> tuple[int, int, int]:
    """(taps, output elements, output elements * taps = multiply-adds), padding ignored."""
    taps = math.prod(weight_shape[2:])
    spatial = [max(1, n // stride) for n in x_shape[2:]]           # ~ output length / size
    out = x_shape[0] * weight_shape[0] * math.prod(spatial)
    return taps, out, out * taps


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """'amd', 'intel' or 'other': /proc/cpuinfo's vendor_id (Linux on x86); 'other' elsewhere.
    One NCHW conv2d exception of the CPU rule was measured to win on AMD only."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("vendor_id"):
                    vendor = line.split(":", 1)[1].strip()
                    return {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor, "other")
    except OSError:
        pass
    return "other"


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


@torch.compiler.assume_constant_result
def _host(probe: str):
    """probe() for one of this host's constants (cpu_vendor, compiled_allowed, _triton_available),
    looked up by name so tests can stand in other hosts. Marked constant because the rules also
    run while torch.compile traces a model holding the depthwise ops (dispatch._traced_call),
    where dynamo cannot trace a file read or a PATH search: it calls this once and keeps the answer."""
    return globals()[probe]()


def _cpu_rule(op, x_shape, weight_shape, stride, channels_last) -> str:
    taps, out, work = _work(x_shape, weight_shape, stride)
    if op == "decode":
        return "slice_sum" if taps <= DECODE_SLICE_SUM_MAX_TAPS else "native"
    if op == "conv2d" and channels_last:
        return "native"
    if op == "conv1d":
        if work <= SLICE_SUM_MAX_WORK or taps > SLICE_SUM_MAX_TAPS or not _host("compiled_allowed"):
            return "slice_sum"    # runner-up at 1x4096x4096: 1.4x behind compiled, native 2.4x
        return "compiled"
    plane = math.prod(x_shape[2:])
    if (stride > 1 and plane >= PER_GROUP_MIN_INPUT_HW and x_shape[0] >= PER_GROUP_MIN_BATCH
            and _host("cpu_vendor") in PER_GROUP_VENDORS):
        return "per_group"        # few launches, each a big strided single-channel conv
    if out >= COMPILED_MIN_OUT and plane >= COMPILED_MIN_INPUT_HW and _host("compiled_allowed"):
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
    if _host("_triton_available") and (op == "decode" or taps <= FUSED_MAX_TAPS):
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


def choose(op, device, dtype, x_shape, weight_shape, stride, dilation, *, channels_last: bool = False) -> str:
    """The concrete impl `auto` resolves to. stride may be an int or a tuple (the first is used:
    the rule only needs the size of the output); dilation does not change the work.
    channels_last: conv2d x is in torch.channels_last memory (NHWC), which changes the winner."""
    _check(op, dtype, x_shape, weight_shape)
    s = stride[0] if isinstance(stride, (tuple, list)) else int(stride)
    dev_type = torch.device(device).type
    if dev_type == "cuda":
        return _cuda_rule(op, tuple(x_shape), tuple(weight_shape), s)
    if dev_type == "cpu":
        return _cpu_rule(op, tuple(x_shape), tuple(weight_shape), s, bool(channels_last))
    return "native"              # other devices: only the framework's own conv is known to run
