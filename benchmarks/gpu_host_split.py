"""Where a launch-bound fused call's host time goes, beside native's: its parts timed side by side.

    split(shape, dtype, device, budget_s) -> {"shape", "dtype", "us": {part: median us}} or {"error"}

Run by benchmarks/gpu_launch.py on the GPU machine for SPLIT_NAMES (the seed, a batch-1
MobileNetV2 layer: the rows where cuDNN's eager call was 2-5 us shorter than fused's). Eager
calls, interleaved (benchmarks/timing.py, medians), all on one input set:
  public fused / public native   the public op (dispatch's call cache, then the impl)
  fused past dispatch            the call cache's fused op (fused._PlannedConv): Plan lookup,
                                 output allocation, launch
  native past dispatch           models/depthwise/native.py's op: F.conv (cuDNN)
  alloc                          the output's allocation alone (x.new_empty_strided, as replay)
  launch                         the kept Plan's launch alone, into a kept output
  launch, launcher __call__      the same through the launcher's Python __call__ (C_LAUNCH off)
  launch, tensor args            the same with tensors, not addresses (INT_POINTERS off)
So dispatch = public - past dispatch, for either impl; fused's own Python = past dispatch -
alloc - launch; the launcher = launch (less the driver's share, which no part here splits off).
A shape whose fused call keeps no Plan (the direct launch off, TRITON_INTERPRET) gets the
public and past-dispatch parts only.
"""
from __future__ import annotations

import torch

from benchmarks import input_sets, timing
from benchmarks.ops_measure import make_call, make_inputs
from benchmarks.ops_suite import Shape

SPLIT_NAMES = ("seed-c2048", "mbv2-b1-c384@14-cl")


def _planned(x: torch.Tensor, weight: torch.Tensor):
    """The call cache's entry (fn, stride, padding, dilation) of a fused call on x and weight,
    and the Plan it kept, as (entry, kept) with kept None when it keeps none."""
    from models.depthwise import dispatch, fused
    for key, entry in dispatch._CALLS.items():
        if (isinstance(entry[0], fused._PlannedConv) and key[3] == x.shape and key[4] == x.stride()
                and key[7] == weight.shape and key[8] == weight.dtype):     # dispatch._call's key layout
            return entry, next(iter(entry[0].plans.values()), None)
    raise LookupError("no fused call-cache entry for this shape: the public op did not run fused")


def parts(shape: Shape, dtype: torch.dtype, device: str) -> dict:
    """{part: zero-arg call} for shape (conv ops only), every call warmed once."""
    from models.depthwise import dispatch, triton_launch
    from models.depthwise.weight_layout import tap_major
    sets = [make_inputs(shape, dtype, device)]
    calls = {"public fused": make_call(shape, "fused", dtype, device, sets),
             "public native": make_call(shape, "native", dtype, device, sets)}
    for call in calls.values():
        input_sets.warm(call, 1)
    x, weight = sets[0]
    for _ in range(3):        # tuned, then the binary kept (the Launcher's entry), then a Plan kept
        calls["public fused"]()
        (planned_conv, s, p, d), kept = _planned(x, weight)
        if kept is not None:
            break
    native_op = dispatch._impl_fn("native", shape.op)
    calls["fused past dispatch"] = lambda: planned_conv(x, weight, None, s, p, d)
    calls["native past dispatch"] = lambda: native_op(x, weight, None, s, p, d)
    if kept is not None:
        plan, out_shape, out_strides, tap = kept
        out = calls["public fused"]()
        w = tap_major(weight) if tap else weight
        args = (x, w, w, out)                     # x, weight, bias (none: the weight again), out
        calls["alloc"] = lambda: x.new_empty_strided(out_shape, out_strides)    # as triton_launch.replay
        launch = lambda: plan.launch(args, out) or _refused()            # noqa: E731
        calls["launch"] = launch
        calls["launch, launcher __call__"] = timing.with_switch(triton_launch, "C_LAUNCH", False, launch)
        calls["launch, tensor args"] = timing.with_switch(triton_launch, "INT_POINTERS", False, launch)
    for call in calls.values():
        call()
    return calls


def _refused():
    raise RuntimeError("the kept Plan refused to launch (its conditions no longer hold)")


def split(shape: Shape, dtype: torch.dtype, device: str, budget_s: float) -> dict:
    row = {"shape": shape.name, "dtype": str(dtype).removeprefix("torch.")}
    try:
        with torch.inference_mode():
            stats = timing.time_interleaved(parts(shape, dtype, device), device=device, budget_s=budget_s,
                                            min_repeats=5, max_repeats=400)
        row["us"] = {name: round(t.median_us, 2) for name, t in stats.items()}
    except Exception as e:  # noqa: BLE001 - a diagnostic: say what failed, keep the run going
        row["error"] = f"{type(e).__name__}: {e}"[:300]
    return row


COLUMNS = ("public fused", "public native", "fused past dispatch", "native past dispatch", "alloc", "launch",
           "launch, launcher __call__", "launch, tensor args")


def table(rows: list[dict]) -> list[str]:
    out = ["| shape | dtype | " + " | ".join(f"{c} us" for c in COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        us = r.get("us") or {}
        cells = ["-" if us.get(c) is None else f"{us[c]:,.1f}" for c in COLUMNS]
        out.append(f"| {r['shape']} | {r['dtype']} | " + " | ".join(cells) + " |"
                   + (f" error: {r['error']}" if "error" in r else ""))
    return out
