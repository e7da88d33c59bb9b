"""Row-chunk budget sweep: what one MobileNetV2 row costs in a batched CPU forward.

    python benchmarks/row_chunks.py [--batches 8,16] [--budgets-mib 0,2,4,8,16,32]
                                    [--budget-s 60] [--quick] [--out DIR]
    dwserve bench row_chunks ...   # the same, through the CLI

The served MobileNetV2 (models.registry: seeded weights, BN folded, NHWC, impl auto) runs
one 224x224 forward at batch 1 and at each batch size under each chunk budget
(models/row_chunks.py; budget 0 = whole-batch stages), all interleaved in one timing run
(benchmarks.timing: round-robin, medians), so every ratio is side by side. Reported per
row: time per forward / batch, and the speedup of a row over a batch-1 forward, which
bounds what dynamic batching can gain on this machine when compute-bound.
Writes <out>/row-chunks-<device>[-quick].{json,md}; <out> is benchmarks/results/local/
(git-ignored) unless given; the committed files take `--out benchmarks/results`. About 1 min
on 2 cores (quiet box).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import timing  # noqa: E402
from benchmarks.cli_args import check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.depthwise import use_impl  # noqa: E402
from models.registry import build_model  # noqa: E402
from models.row_chunks import CPU_ROW_CHUNK_BYTES, chunk_plan, conv_stage_row_bytes  # noqa: E402


def sweep(batches: list[int], budgets_mib: list[int], budget_s: float, size: int = 224) -> dict:
    served = build_model("mobilenet_v2")
    model = served.module
    row_bytes = conv_stage_row_bytes(model.features, size, size, 4)

    def forward(x, budget_bytes):
        def call():
            model.row_chunk_bytes = budget_bytes
            with use_impl("auto"), torch.inference_mode():
                return model(x)
        return call

    def image(batch):
        return torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

    fns, cases = {"batch1": forward(image(1), None)}, {"batch1": (1, None)}   # name -> (batch, MiB)
    for b in batches:
        x = image(b)
        for mib in budgets_mib:
            name = f"batch{b}/budget{mib}MiB"
            fns[name], cases[name] = forward(x, (mib << 20) or None), (b, mib)
    stats = timing.time_interleaved(fns, device="cpu", budget_s=budget_s, min_repeats=5)
    model.row_chunk_bytes = CPU_ROW_CHUNK_BYTES
    one = stats["batch1"].median_us
    records = []
    for name, t in stats.items():
        batch, mib = cases[name]
        plan = chunk_plan(row_bytes, batch, mib << 20) if mib else None
        records.append({"name": name, "batch": batch, "budget_mib": mib, "plan": plan,
                        "per_row_ms": round(t.median_us / batch / 1e3, 3),
                        "row_speedup_vs_batch1": round(one / (t.median_us / batch), 3),
                        "timing": t.as_dict()})
    return {"image_size": size, "stage_row_bytes": row_bytes, "default_budget_mib": CPU_ROW_CHUNK_BYTES >> 20,
            "records": records}


def write_markdown(result: dict, path: Path) -> None:
    env = result["environment"]
    lines = [f"# MobileNetV2 row cost in batched CPU forwards ({env['device_name']})", "",
             f"torch {env['torch']}, {env['cpu_count']} CPU cores, {env['torch_threads']} torch "
             f"threads, impl auto, {result['image_size']}x{result['image_size']} fp32 NHWC; medians of interleaved samples. Budget 0 = "
             f"every stage over the whole batch (no chunks). Default budget: "
             f"{result['default_budget_mib']} MiB (models/row_chunks.py).", "",
             "| batch | budget MiB | per row ms | row speedup vs batch 1 | plan (stages, rows) |",
             "|---:|---:|---:|---:|---|"]
    for r in result["records"]:
        plan = " ".join(f"{a}-{b - 1}:{n}" for a, b, n in r["plan"]) if r["plan"] else ""
        lines.append(f"| {r['batch']} | {'' if r['budget_mib'] is None else r['budget_mib']} | "
                     f"{r['per_row_ms']:.2f} | {r['row_speedup_vs_batch1']:.2f} | {plan} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench row_chunks", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="8,16")
    p.add_argument("--budgets-mib", default="0,2,4,8,16,32")
    p.add_argument("--budget-s", type=positive(float), default=60.0, help="total timing budget")
    p.add_argument("--quick", action="store_true", help="batch 2, budgets 0 and 8, 64x64, a few s")
    p.add_argument("--out", type=Path, default=LOCAL, help=out_help())
    args = p.parse_args(argv)
    batches = [2] if args.quick else [int(b) for b in args.batches.split(",")]
    budgets = [0, 8] if args.quick else [int(m) for m in args.budgets_mib.split(",")]
    if any(b < 2 for b in batches) or any(m < 0 for m in budgets):
        p.error("expected --batches >= 2 and --budgets-mib >= 0")
    check_out(p, args.out)
    result = {"environment": timing.environment("cpu"), "quick": args.quick,
              **sweep(batches, budgets, 2.0 if args.quick else args.budget_s,
                      size=64 if args.quick else 224)}
    stem = "row-chunks-cpu" + ("-quick" if args.quick else "")
    print(write_results(args.out, stem, result, write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
