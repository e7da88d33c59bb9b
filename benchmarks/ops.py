"""Operator benchmark: every depthwise impl on a fixed suite of named shapes.

    python benchmarks/ops.py [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--quick]
                             [--out DIR] [--shapes SUBSTR,..] [--impls a,b,..]
    dwserve bench ops ...          # the same, through the CLI

For each shape, the impls (per_group, slice_sum, compiled, native, auto; fused on CUDA) are
timed *interleaved* by benchmarks.timing (shuffled round-robin samples, medians), all through the
public ops (`depthwise_conv1d/2d`, `conv1d_decode_step`) so each pays the same validation
and dispatch cost; `auto` additionally pays its own (cached) choice. Each is then run once
under models.profiling.count_launches for aten ops and CUDA kernels per call.

Writes <out>/ops-<device>[-<dtype>][-quick].{json,md,png}, <out> benchmarks/results/local/
(git-ignored) unless given: `--out benchmarks/results` replaces the committed files. The JSON is
a list of records, one per (shape, impl): shape {name, op, x, weight, stride, padding, dilation,
channels, k}, impl, dtype, device, device_name, cpu, torch, triton (the environment in every record),
median_us, p10_us, p90_us, iqr_us, repeats, aten_ops, cuda_kernels, auto_choice,
speedup_vs_native, speedup_vs_per_group, error (null unless the impl failed).

The suite of shapes is benchmarks/ops_suite.py, timing one shape benchmarks/ops_measure.py, the
Markdown and auto.py table benchmarks/ops_report.py; this file is the CLI, and its names stay
importable from here (ops.SUITE, ops.bench_shape, ops.write_markdown, ...) for gpu*.py and tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:            # `python benchmarks/ops.py` puts benchmarks/ first
    sys.path.insert(0, str(_REPO))

from benchmarks import plots, timing  # noqa: E402
from benchmarks.ops_measure import auto_choice, bench_shape, impls_for, make_call, make_inputs  # noqa: E402
from benchmarks.ops_report import acceptance, auto_table, render, write_markdown  # noqa: E402
from benchmarks.ops_suite import DTYPES, IMPLS, QUICK_NAMES, SEED, SUITE, Shape, shape_dict  # noqa: E402
from benchmarks.cli_args import check_device, check_out, positive  # noqa: E402
from benchmarks.results_files import COMMITTED, LOCAL, out_help, write_results  # noqa: E402
from models.allocator import keep_freed_memory  # noqa: E402

__all__ = ["DTYPES", "IMPLS", "QUICK_NAMES", "SEED", "SUITE", "Shape", "shape_dict",
           "auto_choice", "bench_shape", "impls_for", "make_call", "make_inputs",
           "acceptance", "auto_table", "render", "write_markdown", "main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench ops", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--quick", action="store_true", help="a handful of shapes, few repeats")
    p.add_argument("--out", default=str(LOCAL), help=out_help())
    p.add_argument("--shapes", help="comma list of substrings of shape names to run")
    p.add_argument("--impls", help=f"comma list from {IMPLS} (default: all that run on --device)")
    p.add_argument("--budget-s", type=positive(float), help="timing budget per shape, s (default 3.0; quick 0.2)")
    p.add_argument("--threads", type=positive(int), help="torch.set_num_threads (default: torch's, as served)")
    p.add_argument("--clock", choices=("wall", "thread_cpu"), default="wall",
                   help="wall (default) or thread_cpu: CPU time of the timing thread, for a busy "
                        "shared CPU box; use with --threads 1")
    p.add_argument("--update", action="store_true",
                   help="merge into the existing results: replace only the shapes run now")
    p.add_argument("--auto-table", nargs="?", const="ops-cpu.json", metavar="NAME",
                   help="measure nothing: print the *_MEASURED rows for models/depthwise/auto.py from "
                        "the committed results benchmarks/results/NAME (default ops-cpu.json; e.g. "
                        "ops-h200.json), or from the file NAME where it has a folder "
                        "(benchmarks/results/local/ops-cpu.json)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the .md/.png beside JSON")
    args = p.parse_args(argv)
    if args.render:
        if not Path(args.render).is_file():
            p.error(f"--render: no results file {args.render}; name a JSON that a run wrote, "
                    "e.g. benchmarks/results/local/ops-cpu.json")
        render(Path(args.render))
        return 0
    if args.auto_table:
        # Reads, never writes. A bare name is a committed file; a name written with a folder,
        # ./ included, is that file.
        bare = "/" not in args.auto_table and os.sep not in args.auto_table
        src = COMMITTED / args.auto_table if bare else Path(args.auto_table)
        if not src.is_file():
            p.error(f"--auto-table: no results file {src}; name a committed one (ops-cpu.json, "
                    f"ops-h200.json once measured) or a path such as benchmarks/results/local/ops-cpu.json")
        print(auto_table(json.loads(src.read_text())))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(p, args.device)
    try:
        impls = impls_for(args.device, args.impls.split(",") if args.impls else None)
    except ValueError as exc:
        p.error(str(exc))
    shapes = [s for s in SUITE if not args.quick or s.name in QUICK_NAMES]
    if args.shapes:
        subs = args.shapes.split(",")
        shapes = [s for s in shapes if any(x in s.name for x in subs)]
    if not shapes:
        p.error(f"--shapes {args.shapes!r} matches none of {[s.name for s in SUITE]}")
    check_out(p, args.out)
    budget = args.budget_s or (0.2 if args.quick else 3.0)
    reps = (3, 20) if args.quick else (7, 400)      # >= 7 samples: medians of ms-scale shapes
    env, dtype = timing.environment(args.device), DTYPES[args.dtype]
    env["malloc_keep_freed"] = keep_freed_memory()
    records = []
    with torch.inference_mode():
        for shape in shapes:
            rs = bench_shape(shape, impls, dtype, args.device, env, budget, *reps,
                             max_fn_s=3 * budget, clock=args.clock)
            records += rs
            print(f"{shape.name:32s} " + "  ".join(
                f"{r['impl']}={r['median_us']:.1f}" if r["median_us"] is not None else f"{r['impl']}=ERR"
                for r in rs) + f"  auto->{rs[0]['auto_choice']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"ops-{args.device}" + ("" if args.dtype == "float32" else f"-{args.dtype}") \
        + ("-quick" if args.quick else "")
    if args.update and (out / f"{stem}.json").is_file():    # replace just the re-run shapes
        fresh = {r["shape"]["name"] for r in records}
        old = [r for r in json.loads((out / f"{stem}.json").read_text()) if r["shape"]["name"] not in fresh]
        order = {s.name: i for i, s in enumerate(SUITE)}
        records = sorted(old + records, key=lambda r: order.get(r["shape"]["name"], len(order)))
    write_results(out, stem, records, lambda rs, path: write_markdown(rs, path, env, args.quick),
                  lambda rs, path: plots.channel_sweep(rs, path, env))
    print(f"wrote {out / stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
