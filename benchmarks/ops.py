"""Operator benchmark: every depthwise impl on a fixed suite of named shapes.

    python benchmarks/ops.py [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--quick]
                             [--out benchmarks/results] [--shapes SUBSTR,..] [--impls a,b,..]
    dwserve bench ops ...          # the same, through the CLI

For each shape, the impls (per_group, slice_sum, compiled, native, auto; fused on CUDA) are
timed *interleaved* by benchmarks.timing (shuffled round-robin samples, medians), all through the
public ops (`depthwise_conv1d/2d`, `conv1d_decode_step`) so each pays the same validation
and dispatch cost; `auto` additionally pays its own (cached) choice. Each is then run once
under models.profiling.count_launches for aten ops and CUDA kernels per call.

Writes <out>/ops-<device>[-<dtype>][-quick].{json,md,png}. The JSON is a list of records,
one per (shape, impl): shape {name, op, x, weight, stride, padding, dilation, channels, k},
impl, dtype, device, device_name, cpu, torch, triton (the environment in every record),
median_us, p10_us, p90_us, iqr_us, repeats, aten_ops, cuda_kernels, auto_choice,
speedup_vs_native, speedup_vs_per_group, error (null unless the impl failed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:            # `python benchmarks/ops.py` puts benchmarks/ first
    sys.path.insert(0, str(_REPO))

from benchmarks import input_sets, plots, timing  # noqa: E402
from benchmarks.results_files import write_results  # noqa: E402
from models.allocator import keep_freed_memory  # noqa: E402

IMPLS = ("per_group", "slice_sum", "compiled", "fused", "native", "auto")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark case. x is (B, C, L) / (B, C, H, W); for op "decode" (B, C) new columns
    with a (B, C, K-1) conv state. k is K (1d) or (KH, KW) (2d); weight is (C, 1, *k)."""
    name: str
    op: str                      # "conv1d" | "conv2d" | "decode"
    x: tuple[int, ...]
    k: int | tuple[int, int]
    stride: int = 1
    padding: int | str = 0
    sweep: bool = False          # part of the channel sweep plotted against C
    channels_last: bool = False  # conv2d x in torch.channels_last memory (NHWC), as served

    @property
    def channels(self) -> int:
        return self.x[1]

    @property
    def weight(self) -> tuple[int, ...]:
        return (self.channels, 1, *((self.k,) if isinstance(self.k, int) else self.k))


def _mobilenet(batch: int, channels_last: bool = False) -> list[Shape]:
    """MobileNetV2's depthwise 3x3 layers (padding 1) at their real input sizes; `-cl` names
    the channels_last (NHWC) layout the served model runs in."""
    layers = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1),
              (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]
    return [Shape(f"mbv2-b{batch}-c{c}@{hw}" + (f"-s{s}" if s > 1 else "") + ("-cl" if channels_last else ""),
                  "conv2d", (batch, c, hw, hw), (3, 3), stride=s, padding=1, channels_last=channels_last)
            for c, hw, s in layers]


SEED = Shape("seed-c2048", "conv1d", (1, 2048, 21), 3, sweep=True)   # the report's microbench
SUITE: tuple[Shape, ...] = (
    SEED,
    *(Shape(f"sweep-c{c}", "conv1d", (1, c, 21), 3, sweep=True)
      for c in (64, 128, 256, 512, 1024, 4096)),              # C=2048 is the seed shape
    Shape("lfm2-350m-prefill-1x128", "conv1d", (1, 1024, 128), 3, padding="causal"),
    Shape("lfm2-350m-prefill-8x512", "conv1d", (8, 1024, 512), 3, padding="causal"),
    Shape("lfm2-2.6b-short-1x19", "conv1d", (1, 2048, 19), 3, padding="causal"),
    Shape("lfm3-1.7b-prefill-1x128", "conv1d", (1, 2048, 128), 7, padding="causal"),   # LFM3: K=7
    Shape("lfm3-1.7b-prefill-8x512", "conv1d", (8, 2048, 512), 7, padding="causal"),
    Shape("decode-16x2048", "decode", (16, 2048), 3),
    Shape("decode-16x2048-k7", "decode", (16, 2048), 7),
    Shape("shortconv-long-1x4096x4096", "conv1d", (1, 4096, 4096), 4, padding="causal"),
    Shape("conformer-k31-8x256x512", "conv1d", (8, 256, 512), 31, padding="same"),
    *_mobilenet(1), *_mobilenet(32),
    *_mobilenet(1, channels_last=True), *_mobilenet(8, channels_last=True), *_mobilenet(32, channels_last=True),
    Shape("convnext-7x7-1x96@56", "conv2d", (1, 96, 56, 56), (7, 7), padding=3),
)
QUICK_NAMES = ("seed-c2048", "sweep-c64", "decode-16x2048", "mbv2-b1-c192@28")


def shape_dict(shape: Shape) -> dict:
    """A shape as its records hold it (`shape` in every record)."""
    return {"name": shape.name, "op": shape.op, "x": list(shape.x), "weight": list(shape.weight),
            "stride": shape.stride, "padding": shape.padding, "dilation": 1, "channels": shape.channels,
            "k": shape.k if isinstance(shape.k, int) else list(shape.k), "sweep": shape.sweep,
            "channels_last": shape.channels_last}


def make_inputs(shape: Shape, dtype: torch.dtype, device: str) -> tuple:
    """Random (x, weight) for `shape`; for decode (x_new (B, C), conv_state (B, C, K-1), weight)."""
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False):   # weights as a model holds them: not inference tensors
        w = torch.randn(shape.weight, generator=g).to(device, dtype)
    if shape.op == "decode":
        x_new = torch.randn(shape.x, generator=g).to(device, dtype)                  # (B, C)
        state = torch.randn(*shape.x, shape.k - 1, generator=g).to(device, dtype)   # (B, C, K-1)
        return x_new, state, w
    x = torch.randn(shape.x, generator=g).to(device, dtype)
    if shape.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w


def make_call(shape: Shape, impl: str, dtype: torch.dtype, device: str, inputs: tuple | list | None = None):
    """A zero-arg closure running `shape` through the public op with `impl`. Pass the same
    `inputs` to every impl of a shape: identical fns then touch identical memory, so their
    times differ only by noise (separate tensors measured up to ~5% apart on big shapes).
    `inputs` may be a list of input sets (benchmarks/input_sets.py): calls cycle through them."""
    from models.depthwise import conv1d_decode_step, depthwise_conv1d, depthwise_conv2d
    sets = inputs if isinstance(inputs, list) else [inputs or make_inputs(shape, dtype, device)]
    if shape.op == "decode":                      # (x_new, state, w): state shifted in place
        return input_sets.cycling(lambda x_new, state, w: conv1d_decode_step(x_new, state, w, impl=impl), sets)
    op = depthwise_conv1d if shape.op == "conv1d" else depthwise_conv2d
    return input_sets.cycling(lambda x, w: op(x, w, stride=shape.stride, padding=shape.padding, impl=impl), sets)


def auto_choice(shape: Shape, dtype: torch.dtype, device: str) -> str:
    """The concrete impl `auto` picks for this shape (as dispatch asks auto.choose)."""
    from models.depthwise import auto
    x_shape = (*shape.x, 1) if shape.op == "decode" else shape.x      # decode: (B, C, 1)
    return auto.choose(shape.op, torch.device(device), dtype, x_shape, shape.weight,
                       shape.stride, 1, channels_last=shape.channels_last)


def impls_for(device: str, requested: list[str] | None) -> list[str]:
    """The impls to run: fused only on CUDA (on CPU it needs the Triton interpreter)."""
    names = requested or [i for i in IMPLS if i != "fused" or device == "cuda"]
    bad = [n for n in names if n not in IMPLS]
    if bad:
        raise ValueError(f"--impls must be a comma list of {IMPLS}, got unknown {bad}")
    return names


def bench_shape(shape: Shape, impls: list[str], dtype: torch.dtype, device: str, env: dict,
                budget_s: float, min_repeats: int, max_repeats: int,
                max_fn_s: float | None = None, clock: str = "wall") -> list[dict]:
    """Records for one shape: interleaved timings, launch counts, speedups."""
    from models.profiling import count_launches
    fns, errors = {}, {}
    inputs = input_sets.input_sets(make_inputs(shape, dtype, device), device)   # CUDA: several
    for impl in impls:
        try:
            fn = make_call(shape, impl, dtype, device, inputs)
            input_sets.warm(fn, len(inputs))                  # compile / fail early; every set once
            fns[impl] = fn
        except Exception as exc:                              # record, don't abort the suite
            errors[impl] = f"{type(exc).__name__}: {exc}"[:300]
    # CUDA: samples of >= 1 ms, so the two device syncs around a sample (~10-20 us) stay ~1%.
    sample = {"min_sample_s": 1e-3} if torch.device(device).type == "cuda" else {}
    stats = timing.time_interleaved(fns, device=device, budget_s=budget_s,
                                    min_repeats=min_repeats, max_repeats=max_repeats,
                                    max_fn_s=max_fn_s, clock=clock, **sample) if fns else {}
    choice = auto_choice(shape, dtype, device)
    base = {"shape": shape_dict(shape), "dtype": str(dtype).removeprefix("torch."), **env, "clock": clock, "auto_choice": choice,
            "input_sets": len(inputs)}
    med = {n: s.median_us for n, s in stats.items()}
    records = []
    for impl in impls:
        rec = {**base, "impl": impl, "median_us": None, "aten_ops": None, "cuda_kernels": None,
               "speedup_vs_native": None, "speedup_vs_per_group": None, "error": errors.get(impl)}
        if impl in stats:
            rec.update(stats[impl].as_dict())
            lc = count_launches(fns[impl])
            rec["aten_ops"], rec["cuda_kernels"] = lc.aten_ops, lc.cuda_kernels
            for ref in ("native", "per_group"):
                if ref in med:
                    rec[f"speedup_vs_{ref}"] = round(med[ref] / med[impl], 3)
        records.append(rec)
    return records


def write_markdown(records: list[dict], path: Path, env: dict, quick: bool) -> None:
    impls = list(dict.fromkeys(r["impl"] for r in records))
    shapes = list(dict.fromkeys(r["shape"]["name"] for r in records))
    by = {(r["shape"]["name"], r["impl"]): r for r in records}
    fmt = lambda v: "-" if v is None else f"{v:,.1f}"
    lines = [f"# Depthwise operator benchmark ({env['device']}, {records[0]['dtype']})", "",
             f"Measured on **{env['device_name']}** ({env['cpu_count']} cores, "
             f"{env['torch_threads']} torch thread(s)), torch {env['torch']}, triton {env['triton']}."
             + (" These are 2-core shared-machine CPU numbers: compare ratios, not absolutes."
                if env["device"] == "cpu" else ""),
             ("Clock: CPU time of the timing thread (`--clock thread_cpu`, 1 torch thread), "
              "taken on a busy shared box where wall time measured the run queue, not the op; "
              "re-run with the default wall clock on a quiet machine for served-latency numbers."
              if records[0].get("clock") == "thread_cpu" else "Clock: wall, device-synchronised."),
             "Median us per call of interleaved samples (benchmarks/timing.py); "
             "`auto` = the impl models/depthwise/auto.py picks, timed through the same public op."
             + (" QUICK run: few shapes and repeats." if quick else ""), "",
             "| shape | dims | " + " | ".join(impls) + " | fastest | auto picks | auto/fastest |",
             "|---|---|" + "---:|" * len(impls) + "---|---|---:|"]
    for s in shapes:
        rs = [by[(s, i)] for i in impls if (s, i) in by]
        timed = {r["impl"]: r["median_us"] for r in rs if r["median_us"] is not None}
        concrete = {i: t for i, t in timed.items() if i != "auto"}
        best = min(concrete, key=concrete.get) if concrete else None
        ratio = timed["auto"] / concrete[best] if best and "auto" in timed else None
        sh = rs[0]["shape"]
        dims = f"x{tuple(sh['x'])} w{tuple(sh['weight'])} s{sh['stride']} p{sh['padding']}"
        lines.append(f"| {s} | {dims} | " + " | ".join(fmt(by[(s, i)]["median_us"]) for i in impls)
                     + f" | {best} | {rs[0]['auto_choice']} | {fmt(ratio) if ratio is None else f'{ratio:.3f}'} |")
    lines += ["", *acceptance(records)]
    lines += ["", "Launches per call (aten ops / CUDA kernels) and speedups:", "",
              "| shape | impl | median_us | p10-p90 us | repeats | aten_ops | cuda_kernels "
              "| x vs native | x vs per_group |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        spread = "-" if r["median_us"] is None else f"{r['p10_us']:,.1f}-{r['p90_us']:,.1f}"
        lines.append(f"| {r['shape']['name']} | {r['impl']} | {fmt(r['median_us'])} | {spread} | "
                     f"{r.get('repeats', '-')} | {r['aten_ops'] if r['aten_ops'] is not None else '-'} | "
                     f"{r['cuda_kernels'] if r['cuda_kernels'] is not None else '-'} | "
                     f"{fmt(r['speedup_vs_native'])} | {fmt(r['speedup_vs_per_group'])} |"
                     + (f" error: {r['error']}" if r["error"] else ""))
    path.write_text("\n".join(lines) + "\n")


def acceptance(records: list[dict]) -> list[str]:
    """The acceptance checks of tests/test_benchmark_results.py, in words, for the report."""
    by = {}
    for r in records:
        if r["median_us"] is not None:
            by.setdefault(r["shape"]["name"], {})[r["impl"]] = r["median_us"]
    out = ["Acceptance:"]
    seed = by.get(SEED.name, {})
    if "per_group" in seed and "auto" in seed:
        out.append(f"- per_group/auto at {SEED.name}: {seed['per_group'] / seed['auto']:.0f}x (want >= 300x)")
    misses = []
    for name, t in by.items():
        rest = {i: v for i, v in t.items() if i != "auto"}
        if "auto" in t and rest:
            best = min(rest, key=rest.get)
            if t["auto"] > 1.05 * rest[best]:
                misses.append(f"{name} ({t['auto'] / rest[best]:.2f}x of {best})")
    out.append(f"- auto within 5% of the fastest impl on {len(by) - len(misses)}/{len(by)} shapes"
               + (f"; misses: {', '.join(misses)}" if misses else ""))
    return out


def render(json_path: Path) -> None:
    """Rewrite the .md and .png beside a results JSON from its records (no measuring)."""
    records = json.loads(json_path.read_text())
    env = {k: records[0].get(k) for k in ("device", "device_name", "cpu_count", "torch_threads",
                                          "torch", "triton")}
    write_markdown(records, json_path.with_suffix(".md"), env, quick="-quick" in json_path.stem)
    plots.channel_sweep(records, json_path.with_suffix(".png"), env)


def auto_table(records: list[dict]) -> str:
    """The *_MEASURED rows for models/depthwise/auto.py from benchmark records (paste them):
    every concrete impl measured for a shape (not auto; failed or skipped impls left out)."""
    by = {}
    for r in records:
        by.setdefault(r["shape"]["name"], {})[r["impl"]] = r
    lines = []
    for name, rs in by.items():
        sh = next(iter(rs.values()))["shape"]
        med = {i: round(rs[i]["median_us"], 1) for i in IMPLS
               if i != "auto" and i in rs and rs[i]["median_us"] is not None}
        if not med:
            continue
        best = min(med, key=med.get)
        lines.append(f"    ({name!r}, {sh['op']!r}, {tuple(sh['x'])}, {tuple(sh['weight'])}, "
                     f"{sh['stride']}, {bool(sh.get('channels_last'))}, dict({', '.join(f'{i}={t}' for i, t in med.items())})),"
                     f"  # -> {best}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench ops", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--quick", action="store_true", help="a handful of shapes, few repeats")
    p.add_argument("--out", default=str(_REPO / "benchmarks" / "results"))
    p.add_argument("--shapes", help="comma list of substrings of shape names to run")
    p.add_argument("--impls", help=f"comma list from {IMPLS} (default: all that run on --device)")
    p.add_argument("--budget-s", type=float, help="timing budget per shape, s (default 3.0; quick 0.2)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's, as served)")
    p.add_argument("--clock", choices=("wall", "thread_cpu"), default="wall",
                   help="wall (default) or thread_cpu: CPU time of the timing thread, for a busy "
                        "shared CPU box; use with --threads 1")
    p.add_argument("--update", action="store_true",
                   help="merge into the existing results: replace only the shapes run now")
    p.add_argument("--auto-table", nargs="?", const="ops-cpu.json", metavar="NAME",
                   help="measure nothing: print the *_MEASURED rows for models/depthwise/auto.py from "
                        "committed results <out>/NAME (default ops-cpu.json; e.g. ops-h200.json)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the .md/.png beside JSON")
    args = p.parse_args(argv)
    if args.render:
        render(Path(args.render))
        return 0
    if args.auto_table:
        print(auto_table(json.loads((Path(args.out) / args.auto_table).read_text())))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    impls = impls_for(args.device, args.impls.split(",") if args.impls else None)
    shapes = [s for s in SUITE if not args.quick or s.name in QUICK_NAMES]
    if args.shapes:
        subs = args.shapes.split(",")
        shapes = [s for s in shapes if any(x in s.name for x in subs)]
    if not shapes:
        p.error(f"--shapes {args.shapes!r} matches none of {[s.name for s in SUITE]}")
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
