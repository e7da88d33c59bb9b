"""The `auto` policy: pick a concrete depthwise impl from device, dtype and shape.

`choose(op, device, dtype, x_shape, weight_shape, stride, dilation) -> str` is called by
`dispatch.resolve_impl`, which caches the answer per (op, device type, dtype, shape), so
this may take microseconds but must be deterministic, and it must only return an impl
that runs on `device`: on CPU one of CPU_CHOICES (never fused).

op "decode" is `conv1d_decode_step`: x_shape is the (B, C, 1) new column.
The CPU rule below is derived from CPU_MEASURED; on CUDA, the rule for the direct launch (the
default) from CUDA_MEASURED_DIRECT and the one for Triton's own launch from CUDA_MEASURED (two H200
runs), the committed benchmarks; test_auto.py checks each picks within 5% of the best impl on every
row (or names the row and why), and test_benchmark_results.py checks the committed CPU JSON was
produced by this rule.
"""
from __future__ import annotations

import functools
import math
import os
import shutil

import torch

OPS = ("conv1d", "conv2d", "decode")
CPU_CHOICES = ("per_group", "slice_sum", "compiled", "native")

from . import auto_measured  # noqa: E402

# The tables the rules below were derived from (auto_measured.py says where each was measured).
CPU_MEASURED = auto_measured.CPU_MEASURED
CUDA_MEASURED = auto_measured.CUDA_MEASURED
CUDA_GRAPHED_MEASURED = auto_measured.CUDA_GRAPHED_MEASURED
CUDA_MEASURED_DIRECT = auto_measured.CUDA_MEASURED_DIRECT

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


# ---------------------------------------------------------------- the CUDA rules
# Two, by how fused calls launch (triton_launch.ENABLED). Decode (one new column) is fused in both.
#
# With the direct launch (the default; numbers in CUDA_MEASURED_DIRECT, the second H200 run,
# h200-2026-12-04-2: eager wall medians; "device" is the same JSON's device_us, graph replay):
# - decode: fused (16x2048: 28.1 vs native 72.7 us, device 1.9 vs 6.8; K=7 40.3 vs 97.9).
# - conv1d: fused, except where native runs it as one cuDNN call (padding equal on both sides)
#   and has fewer than NATIVE_SYMMETRIC_MAX_WORK multiply-adds: native. With causal (one-sided)
#   padding native pays an F.pad kernel first and fused wins outright wherever its kernel is more
#   than a few us (LFM2/LFM3 prompts 1x19 to 8x512: 21-41 us vs cuDNN's 64-145; 1x4096x4096 K=4:
#   45.7 vs 245). On the small padded-both-sides rows (the seed, the channel sweep: L=21) both
#   calls are host-bound (21-38 us) and cuDNN's host path is shorter: seed-c2048 fused 22.7 vs
#   20.8 us (1.09x), the sweep 1.02-1.04x (c512 fused 2% ahead), while the kernels themselves are
#   level or fused's (device 1.7 vs 2.8 us on the seed). Conformer's K=31 "same" conv stays fused:
#   its kernels (device 15.1 vs 20.4 us) are as long as the host's call, and eager it went to
#   cuDNN in float32 (32.4 vs 29.6, 1.09x) but to fused in bfloat16 (23.1 vs 24.9). In device time
#   fused is ahead of or level with cuDNN on every conv1d row (1.00x on sweep-c64 and -c512,
#   1.27-6.1x on the other 12: LFM2 8x512 9.6 vs 59.0 us), so inside CUDA graphs (below) conv1d
#   is fused.
# - conv2d, channels_last and NCHW: native. cuDNN's NHWC depthwise kernel was ahead on every
#   MobileNetV2 row measured (batch 1 to 32): eager 1.01-1.22x, device 1.03-1.77x (b1 c144@56 s2:
#   2.8 vs 5.0 us; b32 c96@112 s2: 47.3 vs 53.1). NCHW was not measured on CUDA in either run:
#   native, as below.
#
# With the direct launch off (DWSERVE_TRITON_DIRECT_LAUNCH=0; numbers in CUDA_MEASURED, the first
# H200 run, fused through Triton's JIT launch at 55-125 us of host a call):
# - decode: fused, one launch for the whole step (16x2048: 84 vs native 103 us, K=7 92 vs 117;
#   bf16 56 vs 73).
# - conv1d with K <= FUSED_MAX_TAPS and at least FUSED_MIN_WORK multiply-adds: fused, where the
#   kernel outlasts the host (1x4096x4096 K=4: 88 vs 246 us; LFM3 8x512 K=7: 111 vs 150).
# - conv1d at L = 1: fused. Not a suite row: it is the served decode's short conv, which runs
#   inside the decode step's CUDA graph, where no host time is paid per kernel (decode-h200.md:
#   one host launch per token with fused in it).
# - every other conv1d (the seed, the channel sweep, LFM2 prompts up to 8x512, conformer's K=31)
#   and every conv2d (MobileNetV2 NCHW and channels_last, batch 1 to 32): native; cuDNN's one call
#   costs the host 22-35 us against fused's 55-125 us, and no measured conv2d row went to fused.
NATIVE_SYMMETRIC_MAX_WORK = 1 << 22   # output elements * taps (~4M): the seed and the sweep (<= 258K,
                                      # kernels of 2-3 us); conformer K=31 (32.5M) is fused: its
                                      # kernels (15 vs 20 us) are as long as the host's call, and
                                      # the eager winner flips with the dtype (float32 native 1.09x
                                      # ahead, bfloat16 fused 1.08x ahead)
FUSED_MAX_TAPS = 9              # (direct launch off) up to K=9; conformer's K=31 goes to cuDNN
FUSED_MIN_WORK = 1 << 25        # output elements * taps (~33M): between LFM2 8x512 K=3 (12.6M,
                                # native) and LFM3 8x512 K=7 (58.7M) / 1x4096x4096 K=4 (67M, fused)


# Inside CUDA graphs (dispatch.for_cuda_graphs(): models/graphed.py's warm-up and capture) a call
# is replayed without its host time, so the rule there goes by device time (CUDA_GRAPHED_MEASURED:
# graph replays on the H200, cuDNN against the strip kernel, all 27 MobileNetV2 NHWC layers):
# - channels_last conv2d the strip kernel takes (3 taps along W, no W dilation, W stride 1 or 2),
#   bfloat16: fused. 0.669x of cuDNN's time (geomean), 26 of 27 layers at or under it, the last
#   1.03x (b1 c144@56: 3.64 vs 3.54 us); up to 2.6x ahead (b8 c576@14 s2: 2.47 vs 6.48 us).
# - the same in float32: fused at batch >= GRAPHED_F32_MIN_BATCH with stride 1 (0.86-1.045x of
#   cuDNN: b32 c576@14 10.2 vs 11.3 us, b8 c144@56 11.6 vs 11.1); native at batch 1 (2-4 us layers,
#   latency-bound: cuDNN 1.11-1.56x ahead) and on strided layers (cuDNN 1.01-1.07x ahead at batch
#   8 and 32). Two rows miss by more than 5% (test_auto_graphed.py lists them): b1 c96@112 s2
#   (native 3.99 vs 3.68 us) and b8 c576@14 s2 (3.66 vs 3.42).
# - conv1d: fused (device time: fused ahead of or level with cuDNN on every conv1d row, above).
# - everything else (float16, which was not measured; NCHW; decode, fused already): the eager rule.
GRAPHED_F32_MIN_BATCH = 8


def _strips_on() -> bool:
    """Whether channels_last 3x3 layers launch the strip kernel (the one measured in graphs)."""
    from . import triton_conv2d
    return triton_conv2d.STRIPS


def _cuda_rule_graphed(op, dtype, x_shape, weight_shape, stride_w, dilation_w, channels_last) -> str | None:
    """auto inside CUDA graphs where it differs from the eager rule (see above), else None."""
    if op == "conv1d" and _host("_triton_available"):
        return "fused"
    if (op != "conv2d" or not channels_last or weight_shape[3] != 3 or dilation_w != 1
            or stride_w not in (1, 2) or not _host("_triton_available") or not _strips_on()):
        return None
    if dtype == torch.bfloat16:
        return "fused"
    if dtype == torch.float32 and stride_w == 1 and x_shape[0] >= GRAPHED_F32_MIN_BATCH:
        return "fused"
    return None


def _direct_launch() -> bool:
    """Whether fused calls launch through triton_launch's direct path (read per decision: tests
    and benchmarks switch it; dispatch caches decisions until clear_caches()): on, and a Triton
    that has the path (an older one launches every call through JITFunction.run, as measured
    for the other rule)."""
    from . import triton_launch
    return triton_launch.ENABLED and triton_launch.supported()


@functools.lru_cache(maxsize=1)
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install raising on import
        return False
    return True


def _cuda_rule(op, x_shape, weight_shape, stride, channels_last: bool = False, padding=None) -> str:
    if not _host("_triton_available"):
        return "native"
    if op == "decode":
        return "fused"
    if _direct_launch():
        return _cuda_rule_direct(op, x_shape, weight_shape, stride, padding)
    return _cuda_rule_jit(op, x_shape, weight_shape, stride)


def _one_native_call(padding) -> bool:
    """conv1d padding native runs as one cuDNN call: equal on both sides (an int, or a resolved
    (left, right) pair). Causal and other one-sided padding cost native an F.pad kernel first;
    None or a string not resolved yet counts as that."""
    if isinstance(padding, int):
        return True
    return isinstance(padding, (tuple, list)) and len(padding) == 2 and padding[0] == padding[1]


def _cuda_rule_direct(op, x_shape, weight_shape, stride, padding) -> str:
    """With the direct launch (the default): conv1d fused, but native where cuDNN does it in one
    call and both are host-bound; conv2d native (see above)."""
    if op != "conv1d":
        return "native"
    if _one_native_call(padding) and _work(x_shape, weight_shape, stride)[2] < NATIVE_SYMMETRIC_MAX_WORK:
        return "native"
    return "fused"


def _cuda_rule_jit(op, x_shape, weight_shape, stride) -> str:
    """With Triton's own launch: fused only where its kernel outlasts the host (see above)."""
    taps, out, work = _work(x_shape, weight_shape, stride)
    if op == "conv1d" and taps <= FUSED_MAX_TAPS and (work >= FUSED_MIN_WORK or x_shape[2] == 1):
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


def choose(op, device, dtype, x_shape, weight_shape, stride, dilation, *, channels_last: bool = False,
           graphed: bool = False, padding=None) -> str:
    """The concrete impl `auto` resolves to. stride may be an int or a tuple (the first is used:
    the rule only needs the size of the output); dilation does not change the work.
    channels_last: conv2d x is in torch.channels_last memory (NHWC), which changes the winner.
    graphed: the call is captured into a CUDA graph and replayed (dispatch.for_cuda_graphs), so
    only device time counts (the CUDA rule inside graphs; elsewhere ignored).
    padding: as spec.py resolves it ((left, right) for conv1d), or None if not known: whether
    native runs a conv1d in one call (the CUDA rule with the direct launch)."""
    _check(op, dtype, x_shape, weight_shape)
    s = stride[0] if isinstance(stride, (tuple, list)) else int(stride)
    dev_type = torch.device(device).type
    if dev_type == "cuda":
        if graphed:
            last = lambda v: int(v[-1]) if isinstance(v, (tuple, list)) else int(v)   # along W
            pick = _cuda_rule_graphed(op, dtype, tuple(x_shape), tuple(weight_shape), last(stride),
                                      last(dilation), bool(channels_last))
            if pick is not None:
                return pick
        return _cuda_rule(op, tuple(x_shape), tuple(weight_shape), s, bool(channels_last), padding)
    if dev_type == "cpu":
        return _cpu_rule(op, tuple(x_shape), tuple(weight_shape), s, bool(channels_last))
    return "native"              # other devices: only the framework's own conv is known to run
