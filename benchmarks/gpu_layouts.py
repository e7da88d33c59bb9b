"""The weight-layout A/B for benchmarks/gpu.py: the channels-inner fused kernels with the
tap-major weight copy (the default, models/depthwise/weight_layout.py) against the weight as
stored, channel-major (weight_layout.as_stored(): what they ran before, and what inference-
tensor weights still get), timed interleaved on the same inputs.

Why a step of its own: the tap-major layout was chosen from compiled code (registers and load
widths on sm_90, benchmarks/results/ptx-sm90-*.md) without a GPU; this measures whether it pays.
The two layouts are tuned separately (the weight's channel stride is in the kernels' autotune
keys), so each runs at its own best config.

    rows = run(device, dtypes, deadline, rows, skipped, budget_s=0.15)
    calls(device, dtypes)          # (label, zero-arg call) for every variant the step launches
    table(rows)                    # Markdown lines

Cases: the MobileNetV2 depthwise layers in channels_last at batch 8 and 32 (the memory-bound
NHWC shapes of the ops suite) and LFM2's gated short-conv block on a prefill (B, L, 3C).
Row: case, dtype, tap_major_us, channel_major_us, speedup (channel_major / tap_major),
min_bytes, tap_major_gbps, channel_major_gbps.
"""
from __future__ import annotations

import math
import time
import torch

from benchmarks import input_sets, ops, timing
from benchmarks.gpu_report import ITEMSIZE, min_bytes
from models.depthwise import short_conv_block
from models.depthwise.weight_layout import call_as_stored

CONV2D = tuple(s for s in ops.SUITE if s.channels_last and s.x[0] in (8, 32))
SHORT_CONV = (("lfm2-350m-block-8x512", (8, 512, 1024), 3), ("lfm2-350m-block-1x128", (1, 128, 1024), 3))
DTYPES = (torch.bfloat16,)                 # the served dtype on CUDA


def _short_conv_inputs(x_shape, k, dtype, device):
    g = torch.Generator().manual_seed(0)
    B, L, C = x_shape
    with torch.inference_mode(False):          # the weight as a model holds it
        w = torch.randn(C, 1, k, generator=g).to(device, dtype)
    return torch.randn(B, L, 3 * C, generator=g).to(device, dtype), w


def cases(device: str, dtype: torch.dtype, rotate: bool = True, conv2d=CONV2D, short_conv=SHORT_CONV):
    """(name, min_bytes, make) for every case in `dtype`; make() -> a zero-arg call of the
    fused op cycling through the case's input sets (one set when not `rotate`)."""
    for shape in conv2d:
        rec = {"shape": {"op": shape.op, "x": list(shape.x), "weight": list(shape.weight), "stride": shape.stride,
                         "padding": shape.padding, "dilation": 1}, "dtype": str(dtype).removeprefix("torch.")}
        inputs = ops.make_inputs(shape, dtype, device)
        sets = input_sets.input_sets(inputs, device) if rotate else [inputs]
        yield shape.name, min_bytes(rec), lambda s=shape, sets=sets: ops.make_call(s, "fused", dtype, device, sets)
    for name, x_shape, k in short_conv:
        B, L, C = x_shape       # reads b, c, x (3 B L C), writes y (B L C), weight C K
        nbytes = ITEMSIZE[str(dtype).removeprefix("torch.")] * (4 * B * L * C + C * k)
        inputs = _short_conv_inputs(x_shape, k, dtype, device)
        sets = input_sets.input_sets(inputs, device) if rotate else [inputs]
        yield name, nbytes, lambda sets=sets: input_sets.cycling(
            lambda bcx, w: short_conv_block(bcx, w, impl="fused"), sets)


def calls(device: str, dtypes=DTYPES, conv2d=CONV2D, short_conv=SHORT_CONV):
    """(label, zero-arg call) per case, dtype and layout: what the step launches (for prewarm)."""
    for dtype in dtypes:
        for name, _, make in cases(device, dtype, False, conv2d, short_conv):
            yield f"{name}/{dtype}/tap_major", make()
            yield f"{name}/{dtype}/channel_major", call_as_stored(make())


def run(device: str, dtypes, deadline: float, rows: list, skipped: list, budget_s: float = 0.15,
        reps: tuple[int, int] = (5, 100), conv2d=CONV2D, short_conv=SHORT_CONV) -> list:
    """Append one row per (case, dtype) measured before `deadline` (time.perf_counter());
    the rest go to `skipped`."""
    sample = {"min_sample_s": 1e-3} if torch.device(device).type == "cuda" else {}
    for dtype in dtypes:
        dname = str(dtype).removeprefix("torch.")
        for name, nbytes, make in cases(device, dtype, True, conv2d, short_conv):
            if time.perf_counter() > deadline:
                skipped.append(f"{name}/{dname}")
                continue
            fns = {"tap_major": make(), "channel_major": call_as_stored(make())}
            with torch.inference_mode():
                for fn in fns.values():      # autotune (channel-major keys are new here), caches,
                    input_sets.warm(fn, input_sets.ROTATE_MAX_SETS)   # outside the warm-up estimate
                stats = timing.time_interleaved(fns, device=device, budget_s=budget_s, min_repeats=reps[0],
                                                max_repeats=reps[1], **sample)
            t, c = stats["tap_major"].median_us, stats["channel_major"].median_us
            gbps = lambda us: None if not us else float(f"{nbytes / (us * 1e3):.4g}")
            rows.append({"case": name, "dtype": dname, "tap_major_us": round(t, 2), "channel_major_us": round(c, 2),
                         "speedup": round(c / t, 3) if t else None, "min_bytes": nbytes,
                         "tap_major_gbps": gbps(t), "channel_major_gbps": gbps(c)})
    return rows


def table(rows: list[dict]) -> list[str]:
    """Markdown rows: the A/B per case, and the geometric mean speedup per dtype."""
    out = ["| case | dtype | tap-major us | channel-major us | speedup | tap-major GB/s |",
           "|---|---|---:|---:|---:|---:|"]
    out += [f"| {r['case']} | {r['dtype']} | {r['tap_major_us']:,.1f} | {r['channel_major_us']:,.1f} | "
            f"{r['speedup']:.3f} | {r['tap_major_gbps'] or '-'} |" for r in rows]
    for d in dict.fromkeys(r["dtype"] for r in rows):
        sp = [r["speedup"] for r in rows if r["dtype"] == d and r["speedup"]]
        if sp:
            out.append(f"| geometric mean | {d} | | | {math.exp(sum(map(math.log, sp)) / len(sp)):.3f} | |")
    return out
