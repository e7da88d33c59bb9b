"""Where a fused call's time goes on the GPU: host launch path against kernel, beside native.

    python benchmarks/gpu_launch.py [--out DIR] [--budget-s 150] [--smoke]

A short device call of its own (the first H200 run found every eager call host-bound:
benchmarks/results/h200-2026-12-04/NOTES.md). Per shape and dtype, side by side in one process:
  eager wall (benchmarks/timing.time_interleaved, medians): native, fused through the direct
      launch of the cached compiled kernel (models/depthwise/triton_launch.py; fused calls seen
      before replay their call site's Plan), the same with tensors, not their addresses, handed
      to Triton's C launcher (triton_launch.INT_POINTERS off: it then calls data_ptr() and the
      driver's cuPointerGetAttribute per pointer), the same through the launcher's Python
      __call__ (triton_launch.C_LAUNCH off: triton_c_launch.py's bypass not taken), and fused
      through Triton's JITFunction.run (the same kernels, the launch path before it);
  device time (benchmarks/timing.time_cuda_graph: a CUDA graph of back-to-back calls, replays
      timed with events): native and fused, the kernels without the host; with min_bytes over it
      against the copy ceiling measured here (benchmarks/gpu_copy.py).
Shapes: the seed, launch-bound LFM2 / MobileNetV2 layers and the memory-bound ones of the suite.
Then, in float32, the host split of the seed and a batch-1 MobileNetV2 layer (gpu_host_split.py:
dispatch, fused's own Python, the output's allocation and the launch, each timed alone).
Stops starting shapes at --budget-s; writes launch-<tag>.{json,md} (the JSON with every autotune
pick: triton_autotune.picks) under --out (default
benchmarks/results/local/, git-ignored) and prints the table last. --smoke: CPU, Triton's
interpreter, two tiny shapes, no graphs (what CI runs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import gpu_config, gpu_copy, gpu_host_split, input_sets, timing  # noqa: E402
from benchmarks.cli_args import check_out, positive, smoke_or_cuda  # noqa: E402
from benchmarks.ops_measure import make_call, make_inputs  # noqa: E402
from benchmarks.ops_suite import SUITE, Shape  # noqa: E402
from benchmarks.results_files import LOCAL  # noqa: E402
from models.depthwise import triton_launch  # noqa: E402

NAMES = ("seed-c2048", "sweep-c64", "lfm2-350m-prefill-1x128", "decode-16x2048", "mbv2-b1-c384@14-cl",
         "mbv2-b1-c32@112-cl", "lfm2-350m-prefill-8x512", "lfm3-1.7b-prefill-8x512",
         "shortconv-long-1x4096x4096", "mbv2-b32-c144@56-cl", "mbv2-b32-c96@112-s2-cl", "mbv2-b32-c32@112-cl")
SMOKE = (Shape("smoke-conv1d", "conv1d", (1, 8, 12), 3, padding="causal"),
         Shape("smoke-conv2d-cl", "conv2d", (1, 8, 6, 6), (3, 3), padding=1, channels_last=True))


def _with_launch(call, direct: bool):
    """call() with the direct launch path on or off (a module flag read per launch)."""
    return timing.with_switch(triton_launch, "ENABLED", direct, call)


def min_bytes(inputs: tuple, out: torch.Tensor) -> int:
    """Each input read once, the output written once."""
    return sum(t.numel() * t.element_size() for t in inputs) + out.numel() * out.element_size()


def measure(shape: Shape, dtype: torch.dtype, device: str, budget_s: float, ceiling_gbps: float | None) -> dict:
    sets = input_sets.input_sets(make_inputs(shape, dtype, device), device)
    fused = lambda direct: _with_launch(make_call(shape, "fused", dtype, device, sets), direct)
    calls = {"native": make_call(shape, "native", dtype, device, sets), "fused_direct": fused(True),
             "fused_direct_tensors": timing.with_switch(triton_launch, "INT_POINTERS", False, fused(True)),
             "fused_direct_pycall": timing.with_switch(triton_launch, "C_LAUNCH", False, fused(True)),
             "fused_jit": fused(False)}
    out = calls["native"]()
    nbytes = min_bytes(sets[0], out if isinstance(out, torch.Tensor) else out[0])
    for c in calls.values():
        input_sets.warm(c, len(sets))
    wall = timing.time_interleaved(calls, device=device, budget_s=budget_s, min_repeats=5, max_repeats=200)
    row = {"shape": shape.name, "dtype": str(dtype).removeprefix("torch."), "min_bytes": nbytes,
           **{f"{k}_wall_us": round(t.median_us, 2) for k, t in wall.items()}}
    return device_times(row, {k: calls[k] for k in ("native", "fused_direct")}, device, ceiling_gbps)


def device_times(row: dict, calls: dict, device: str, ceiling_gbps: float | None) -> dict:
    """row with <name>_device_us (a CUDA graph of back-to-back calls, replays timed: kernels
    only; None off CUDA) and <name>_copy_fraction (row["min_bytes"] over it, against the ceiling)
    per call, or <name>_graph_error for a call that cannot be captured."""
    for name, call in calls.items():
        us = None
        if device == "cuda":
            try:
                us = timing.time_cuda_graph(call).median_us
            except Exception as e:  # noqa: BLE001 - an impl that cannot be captured: say so, keep the row
                row[f"{name}_graph_error"] = f"{type(e).__name__}: {e}"[:200]
        row[f"{name}_device_us"] = None if us is None else round(us, 2)
        if us and ceiling_gbps:
            row[f"{name}_copy_fraction"] = round(row["min_bytes"] / (us * 1e-6) / 1e9 / ceiling_gbps, 4)
    return row


def table(rows: list[dict]) -> list[str]:
    f = lambda v: "-" if v is None else f"{v:,.1f}"
    p = lambda v: "-" if v is None else f"{100 * v:.0f}%"
    out = ["| shape | dtype | MB | native wall | fused direct wall | fused direct, tensor args wall | "
           "fused direct, Python launcher call wall | fused JIT wall | native device | fused device | native copy | "
           "fused copy |", "|---|---|---:|" + "---:|" * 9]
    for r in rows:
        out.append(f"| {r['shape']} | {r['dtype']} | {r['min_bytes'] / 1e6:.2f} | {f(r.get('native_wall_us'))} | "
                   f"{f(r.get('fused_direct_wall_us'))} | {f(r.get('fused_direct_tensors_wall_us'))} | "
                   f"{f(r.get('fused_direct_pycall_wall_us'))} | "
                   f"{f(r.get('fused_jit_wall_us'))} | "
                   f"{f(r.get('native_device_us'))} | {f(r.get('fused_direct_device_us'))} | "
                   f"{p(r.get('native_copy_fraction'))} | {p(r.get('fused_direct_copy_fraction'))} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=LOCAL, help="results folder (default benchmarks/results/local; "
                    "the committed files take --out benchmarks/results)")
    ap.add_argument("--budget-s", type=positive(float), default=150.0, help="stop starting shapes after this")
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, tiny shapes")
    args = ap.parse_args(argv)
    check_out(ap, args.out)
    device = smoke_or_cuda(ap, args.smoke)
    start, env = time.monotonic(), gpu_config.environment(device, sys.argv[1:] if argv is None else argv)
    tag = "smoke" if args.smoke else gpu_config.run_tag(device, False, env.get("device_name") or "")
    ceiling = None if args.smoke else gpu_copy.copy_ceiling(device, 1 << 30, 10)["gbps"]
    shapes = SMOKE if args.smoke else [s for n in NAMES for s in SUITE if s.name == n]
    rows, skipped = [], []
    for dtype in (torch.float32, torch.bfloat16):
        for shape in shapes:
            if time.monotonic() - start > args.budget_s:
                skipped.append(f"{shape.name}/{dtype}")
                continue
            try:
                rows.append(measure(shape, dtype, device, 0.05 if args.smoke else 0.4, ceiling))
            except Exception as e:
                rows.append({"shape": shape.name, "dtype": str(dtype), "min_bytes": 0, "error": repr(e)[:300]})
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    split_shapes = SMOKE[:1] if args.smoke else [s for n in gpu_host_split.SPLIT_NAMES for s in SUITE if s.name == n]
    split = [gpu_host_split.split(s, torch.float32, device, 0.05 if args.smoke else 0.3) for s in split_shapes]
    args.out.mkdir(parents=True, exist_ok=True)
    from models.depthwise import triton_autotune
    result = {"environment": env, "copy_ceiling_gbps": ceiling, "rows": rows, "skipped": skipped, "host_split": split,
              "seconds": round(time.monotonic() - start, 1),
              "autotune_picks": triton_autotune.picks()}     # which tile each shape's key got
    (args.out / f"launch-{tag}.json").write_text(json.dumps(result, indent=1, default=str))
    head = [f"# Fused launch path and kernel time ({env.get('device_name')})", "",
            f"torch {env.get('torch')}, triton {env.get('triton')}, copy ceiling "
            f"{'-' if ceiling is None else f'{ceiling:,.0f}'} GB/s; wall = eager calls (host included), "
            "device = CUDA graph replay (kernels only). Skipped (budget): " + (", ".join(skipped) or "none"), ""]
    lines = table(rows)
    split_md = ["", "Host split (eager wall, us; benchmarks/gpu_host_split.py says what each part is):", "",
                *gpu_host_split.table(split)]
    (args.out / f"launch-{tag}.md").write_text("\n".join(head + lines + split_md) + "\n")
    print("\n".join(lines))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
