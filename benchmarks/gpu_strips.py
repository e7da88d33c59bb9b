"""The strip kernels side by side on the GPU with what they replace: per suite layer, cuDNN, the
fused kernel the strip kernel stands in for (`generic`: the per-pixel NHWC kernel, the generic
NCHW or conv1d kernel; the strip switches off) and the strip kernel as served (`strips`):
models/depthwise/triton_conv2d_strips.py on every channels_last MobileNetV2 layer,
triton_conv2d_nchw_strips.py on its NCHW ones, triton_conv1d_strips.py on the (B, C, L) conv1d
rows it covers (the LFM2 / LFM3 prompts, the K=4 long row).

    python benchmarks/gpu_strips.py [--out DIR] [--budget-s 120] [--dtypes float32,bfloat16,float16]
                                    [--layouts nhwc,nchw,ncl] [--smoke]

A short device call of its own (the second H200 run's third call, as gpu_nhwc.py then, had the
per-pixel NHWC kernel 1.03-1.77x behind cuDNN in device time on all 27 NHWC layers and led to
the NHWC strip kernel: benchmarks/results/h200-2026-12-04-2/nhwc-h200.md). Per shape and dtype,
in one process: device time (benchmarks/timing.time_cuda_graph, kernels only) of each, against
the copy ceiling measured here; eager wall medians of them interleaved. On the NHWC layers where
the tuner also tries tall strips (2 and 4 rows at stride 1 from 2**20 outputs, 2 rows at stride 2
from 2**22: triton_autotune.tall_strip_rows; 8 of the 27), a fourth column: the strip kernel with
1-row strips only (triton_conv2d.TWO_ROW_STRIPS off), so strips/1-row says what they bought; on
the bfloat16 / float16 NCHW and (B, C, L) rows whose strips are 8 wide (16-byte vectors), a fifth:
4-wide strips (triton_vectors.WIDE_HALF off), so strips/4-wide says what the 16-byte loads bought.
Every fused variant is compiled first on all cores (benchmarks/gpu_prewarm), then autotuned per
layer as in serving. Writes strips-<tag>.{json,md} under --out (default benchmarks/results/local/)
with every autotune pick. --smoke: CPU, Triton's interpreter, six tiny shapes (two a layout), no
graphs (what CI runs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import gpu_config, gpu_copy, input_sets, timing  # noqa: E402
from benchmarks.cli_args import check_out, positive, smoke_or_cuda  # noqa: E402
from benchmarks.gpu_launch import device_times, min_bytes  # noqa: E402
from benchmarks.ops_measure import make_call, make_inputs  # noqa: E402
from benchmarks.ops_suite import SUITE, Shape  # noqa: E402
from benchmarks.results_files import LOCAL  # noqa: E402
from models.depthwise import (triton_conv1d, triton_conv1d_strips, triton_conv2d,  # noqa: E402
                              triton_conv2d_nchw_strips, triton_vectors)

IMPLS = ("native", "fused_generic", "fused_strips", "fused_strips_1row", "fused_strips_4wide")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SMOKE = (Shape("smoke-s1-cl", "conv2d", (1, 16, 7, 9), (3, 3), padding=1, channels_last=True),
         Shape("smoke-s2-cl", "conv2d", (2, 16, 8, 8), (3, 3), stride=2, padding=1, channels_last=True),
         Shape("smoke-s1-nchw", "conv2d", (1, 8, 6, 8), (3, 3), padding=1),
         Shape("smoke-s2-nchw", "conv2d", (2, 8, 8, 8), (3, 3), stride=2, padding=1),
         Shape("smoke-k4-ncl", "conv1d", (1, 8, 16), 4, padding="causal"),
         Shape("smoke-k7-ncl", "conv1d", (2, 4, 12), 7, padding="causal"))
LAYOUTS = ("nhwc", "nchw", "ncl")
NCL = ("lfm2-350m-prefill-1x128", "lfm2-350m-prefill-8x512", "lfm3-1.7b-prefill-1x128", "lfm3-1.7b-prefill-8x512",
       "shortconv-long-1x4096x4096")      # the (B, C, L) conv1d suite rows the conv1d strip kernel covers


def _layout(shape: Shape) -> str:
    return "ncl" if shape.op == "conv1d" else "nhwc" if shape.channels_last else "nchw"


def suite_shapes(layouts) -> list[Shape]:
    """The suite's layers in `layouts`: MobileNetV2's channels_last ones (27), its NCHW ones (18),
    then the conv1d rows of NCL (5)."""
    rows = [s for s in SUITE if (s.op == "conv2d" and s.name.startswith("mbv2")) or s.name in NCL]
    return [s for layout in LAYOUTS if layout in layouts for s in rows if _layout(s) == layout]


def with_strips(call, on: bool):
    """call() with every strip kernel on or off (triton_conv2d.STRIPS for NHWC, NCHW_STRIPS for
    NCHW, triton_conv1d.STRIPS for (B, C, L) conv1d: read per launch, plans keyed on them); off,
    each layer takes the kernel its strip kernel replaces (the `generic` column)."""
    for module, name in ((triton_conv2d, "STRIPS"), (triton_conv2d, "NCHW_STRIPS"), (triton_conv1d, "STRIPS")):
        call = timing.with_switch(module, name, on, call)
    return call


def two_rows_tried(shape: Shape) -> bool:
    """Whether the strip tuner tries its tall (2- and 4-row) configs on this layer
    (triton_autotune.tall_strip_rows); elsewhere the 1-row column would time the same launch."""
    from models.depthwise.triton_autotune import size_class, tall_strip_rows
    if not shape.channels_last:
        return False
    (b, c, h, w), s = shape.x, shape.stride
    outputs = b * ((h + 2 * shape.padding - 3) // s + 1) * ((w + 2 * shape.padding - 3) // s + 1)
    return bool(tall_strip_rows(c, size_class(outputs), s))


def wide_tried(shape: Shape, dtype: torch.dtype) -> bool:
    """Whether the strip kernel as served runs 8-wide strips on this layer in this dtype (2-byte
    dtypes, contiguous NCHW / (B, C, L) rows of whole 8-vectors: the kernels' strip_width with
    WIDE_HALF on); elsewhere the 4-wide column would time the same launch."""
    if shape.channels_last or torch.empty(0, dtype=dtype).element_size() != 2:
        return False
    strides = lambda dims: torch.empty(dims, device="meta").stride()      # contiguous, as make_inputs makes x
    if shape.op == "conv1d":
        (b, c, n), k = shape.x, shape.k
        left, right = (k - 1, 0) if shape.padding == "causal" else (int(shape.padding),) * 2
        n_out = n + left + right - k + 1
        width = lambda: triton_conv1d_strips.strip_width(strides((b, c, n)), strides((b, c, n_out)), k, shape.stride,
                                                         1, left, n, n_out, 2)
    else:
        (b, c, h, w), pad, st = shape.x, int(shape.padding), shape.stride
        h_out, w_out = (h + 2 * pad - 3) // st + 1, (w + 2 * pad - 3) // st + 1
        width = lambda: triton_conv2d_nchw_strips.strip_width(strides((b, c, h, w)), strides((b, c, h_out, w_out)),
                                                              3, st, 1, pad, w, w_out, 2)
    return timing.with_switch(triton_vectors, "WIDE_HALF", True, width)() == 8


def calls_for(shape: Shape, dtype: torch.dtype, device: str, sets: list, one_row: bool, four_wide: bool) -> dict:
    """native, the generic fused kernel, the strip kernel as served (NHWC: 1- and 2-row strips
    tuned; 2-byte NCHW / (B, C, L): 8-wide strips where they fit), with one_row the NHWC strip kernel
    with the 1-row configs only (TWO_ROW_STRIPS off), with four_wide the strip kernel with 4-wide
    strips only (triton_vectors.WIDE_HALF off)."""
    fused = lambda on: with_strips(make_call(shape, "fused", dtype, device, sets), on)
    calls = {"native": make_call(shape, "native", dtype, device, sets),
             "fused_generic": fused(False), "fused_strips": fused(True)}
    if one_row:
        calls["fused_strips_1row"] = timing.with_switch(triton_conv2d, "TWO_ROW_STRIPS", False, fused(True))
    if four_wide:
        calls["fused_strips_4wide"] = timing.with_switch(triton_vectors, "WIDE_HALF", False, fused(True))
    return calls


def prewarm(shapes, dtypes, device: str, seconds: float) -> dict:
    """Compile the generic and the strip kernels' variants for `shapes` x `dtypes` on every core."""
    from benchmarks import gpu_prewarm
    jobs = []
    for on in (False, True):
        jobs += with_strips(lambda: gpu_prewarm.record_jobs(device, [], shapes, ops_dtypes=dtypes), on)()
    return gpu_prewarm.prewarm(jobs, time.perf_counter() + seconds)


def measure(shape: Shape, dtype: torch.dtype, device: str, ceiling_gbps: float | None, wall_s: float,
            one_row: bool, four_wide: bool) -> dict:
    sets = input_sets.input_sets(make_inputs(shape, dtype, device), device)
    calls = calls_for(shape, dtype, device, sets, one_row, four_wide)
    ref = calls["native"]()
    row = {"shape": shape.name, "dtype": str(dtype).removeprefix("torch."), "min_bytes": min_bytes(sets[0], ref)}
    for name, call in calls.items():
        input_sets.warm(call, len(sets))
        if name != "native":           # each fused variant against cuDNN on the same inputs
            err = (call().double() - ref.double()).abs().max().item() / max(1.0, ref.double().abs().max().item())
            row[f"{name}_max_rel_err"] = round(err, 6)
    wall = timing.time_interleaved(calls, device=device, budget_s=wall_s, min_repeats=5, max_repeats=100)
    row.update({f"{k}_wall_us": round(t.median_us, 2) for k, t in wall.items()})
    return device_times(row, calls, device, ceiling_gbps)


def ratios(rows: list[dict]) -> dict:
    """Per dtype: geometric mean and worst of device time ratios: each fused variant / native, the
    strip kernel / the generic one, and the strip kernel as served / its 1-row strips and / its
    4-wide strips (the rows that have both)."""
    out = {}
    for dtype in sorted({r["dtype"] for r in rows}):
        pairs = [(i, "native") for i in IMPLS[1:]] + [("fused_strips", b) for b in ("fused_generic", "fused_strips_1row",
                                                                                  "fused_strips_4wide")]
        for impl, base in pairs:
            rs = [r[f"{impl}_device_us"] / r[f"{base}_device_us"] for r in rows if r["dtype"] == dtype
                  and r.get(f"{impl}_device_us") and r.get(f"{base}_device_us")]
            if rs:
                out[f"{dtype} {impl}/{base}"] = {"geomean": round(statistics.geometric_mean(rs), 3),
                                                 "max": round(max(rs), 3), "n": len(rs)}
    return out


def table(rows: list[dict]) -> list[str]:
    f = lambda v: "-" if v is None else f"{v:,.2f}"
    p = lambda v: "-" if v is None else f"{100 * v:.0f}%"
    ratio = lambda a, b: f(a / b) if a and b else "-"
    out = ["| shape | dtype | MB | native dev | generic dev | strips dev | 1-row strips dev | 4-wide strips dev | "
           "strips/native | strips/generic | strips/1-row | strips/4-wide | native copy | generic copy | strips copy | "
           "native wall | generic wall | strips wall |", "|---|---|---:|" + "---:|" * 15]
    for r in rows:
        n, g, s, s1, s4 = (r.get(f"{k}_device_us") for k in IMPLS)
        out.append(f"| {r['shape']} | {r['dtype']} | {r['min_bytes'] / 1e6:.2f} | {f(n)} | {f(g)} | {f(s)} | {f(s1)} | "
                   f"{f(s4)} | {ratio(s, n)} | {ratio(s, g)} | {ratio(s, s1)} | {ratio(s, s4)} | "
                   + " | ".join(p(r.get(f"{k}_copy_fraction")) for k in ("native", "fused_generic", "fused_strips"))
                   + " | " + " | ".join(f(r.get(f"{k}_wall_us")) for k in ("native", "fused_generic", "fused_strips"))
                   + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=LOCAL, help="results folder (default benchmarks/results/local)")
    ap.add_argument("--budget-s", type=positive(float), default=120.0, help="stop starting shapes after this")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16",
                    help="comma list (default float32,bfloat16,float16: float16 had no rows in the first call)")
    ap.add_argument("--layouts", default="nhwc,nchw,ncl", help="comma list of nhwc, nchw, ncl (default all)")
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, tiny shapes")
    args = ap.parse_args(argv)
    check_out(ap, args.out)
    dtypes = [DTYPES.get(n.strip()) for n in args.dtypes.split(",")]
    if not dtypes or None in dtypes:
        ap.error(f"--dtypes must be a comma list of {sorted(DTYPES)}, got {args.dtypes!r}")
    device = smoke_or_cuda(ap, args.smoke)
    start, env = time.monotonic(), gpu_config.environment(device, sys.argv[1:] if argv is None else argv)
    tag = "smoke" if args.smoke else gpu_config.run_tag(device, False, env.get("device_name") or "")
    layouts = [n.strip() for n in args.layouts.split(",")]
    if not layouts or any(n not in LAYOUTS for n in layouts):
        ap.error(f"--layouts must be a comma list of {LAYOUTS}, got {args.layouts!r}")
    shapes = [s for s in (SMOKE if args.smoke else suite_shapes(layouts)) if _layout(s) in layouts]
    try:
        warm = None if args.smoke else prewarm(shapes, dtypes, device, 40.0)
    except Exception as e:  # noqa: BLE001 - then the autotuner compiles as it goes, slower
        warm = {"error": f"{type(e).__name__}: {e}"[:300]}
    print(f"prewarm: {warm}", flush=True)
    ceiling = None if args.smoke else gpu_copy.copy_ceiling(device, 1 << 30, 10)["gbps"]
    rows, skipped = [], []
    for dtype in dtypes:
        for shape in shapes:
            if time.monotonic() - start > args.budget_s:
                skipped.append(f"{shape.name}/{str(dtype).removeprefix('torch.')}")
                continue
            try:
                rows.append(measure(shape, dtype, device, ceiling, 0.05 if args.smoke else 0.15,
                                    (args.smoke and shape.channels_last) or two_rows_tried(shape),
                                    wide_tried(shape, dtype)))
            except Exception as e:  # noqa: BLE001 - the row says what failed, the run goes on
                rows.append({"shape": shape.name, "dtype": str(dtype), "min_bytes": 0, "error": repr(e)[:300]})
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    from models.depthwise import triton_autotune
    result = {"environment": env, "copy_ceiling_gbps": ceiling, "prewarm": warm, "rows": rows,
              "skipped": skipped, "ratios": ratios(rows), "seconds": round(time.monotonic() - start, 1),
              "autotune_picks": triton_autotune.picks()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"strips-{tag}.json").write_text(json.dumps(result, indent=1, default=str))
    head = [f"# The strip kernels against cuDNN and the kernels they replace ({env.get('device_name')})", "",
            "generic = the per-pixel NHWC / generic NCHW / generic conv1d kernel (strip switches off); strips = "
            "the NHWC / NCHW / conv1d strip kernel (on, as served); 1-row strips = the NHWC strip kernel without "
            "its two-row configs; 4-wide strips = the NCHW / conv1d strip kernel without its 8-wide (16-byte) "
            "strips in bfloat16 / float16.", "",
            f"torch {env.get('torch')}, triton {env.get('triton')}, copy ceiling "
            f"{'-' if ceiling is None else f'{ceiling:,.0f}'} GB/s; dev = CUDA graph replay (kernels only, us), "
            "wall = eager calls (host included, us). Skipped (budget): " + (", ".join(skipped) or "none"), "",
            "Device time, fused / native: " + json.dumps(result["ratios"]), ""]
    lines = table(rows)
    (args.out / f"strips-{tag}.md").write_text("\n".join(head + lines) + "\n")
    print("\n".join(lines + head[-2:]))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
