"""Model benchmark: whole-model latency, launches and the depthwise share, per depthwise impl.

    python benchmarks/models.py [--device cpu|cuda] [--quick] [--out DIR]
                                [--impls a,b,..] [--cases SUBSTR,..] [--threads N]
    dwserve bench models ...       # the same, through the CLI

Cases (the served models as models.registry builds them: seeded weights, BN folded, in the
served dtype unless --dtype says otherwise: bfloat16 on CUDA, float32 on CPU):
  lfm2 (preset lfm2-demo)   prefill: one cache-less forward over 128 tokens (the /infer path),
                            batch 1 and 8; decode: one new token per row into a cache already
                            holding 128 (the cache is rewound after each call, so every call is
                            the same step), batch 1 and 8
  mobilenet_v2              one forward at 224x224, batch 1 and 32
  lfm3 (preset lfm3-demo)   the lfm2 cases on its LFM3 twin (K=7 convs); only with --cases lfm3
For each case the impls (per_group, slice_sum, compiled, native, auto; fused on CUDA) run
the same inputs under `use_impl(impl)`:
  latency     median of interleaved samples (benchmarks.timing: round-robin, medians)
  launches    models.profiling.count_launches over one forward (aten ops; CUDA kernels on CUDA)
  dw share    depthwise seconds / forward seconds, from `share_runs` separate forwards under
              models.profiling.depthwise_timer (device-synchronised around every depthwise op,
              which is why these runs are not the latency samples)
On a CPU shared with other jobs use --threads 1 (the committed run is 2 threads, quiet box): two OpenMP
threads spinning against other processes made latencies erratic there (decode b1 under
native: 11 ms at 1 thread, 196 ms at 2). Total time: about 5 min on 2 cores.
Writes <out>/models-<device>[-quick].{json,md,png}; <out> is benchmarks/results/local/
(git-ignored) unless given; the committed files take `--out benchmarks/results`. The JSON holds
`environment`, `settings`, `records` (one per case x impl) and `acceptance` (the LFM2
per_group/auto shares).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
# `python benchmarks/models.py` puts benchmarks/ first on sys.path, where this very file would
# shadow the `models` package: drop that entry and put the repository root first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import timing  # noqa: E402
from models.allocator import keep_freed_memory  # noqa: E402
from benchmarks.models_report import write_markdown, write_plot  # noqa: E402
from benchmarks.cli_args import check_device, check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402

IMPLS = ("per_group", "slice_sum", "compiled", "fused", "native", "auto")


@dataclasses.dataclass(frozen=True)
class Case:
    """One model workload. size: tokens already in context (lfm2) or image side (mobilenet_v2)."""
    model: str                   # "lfm2" | "lfm3" | "mobilenet_v2"
    kind: str                    # "prefill" | "decode" | "forward"
    batch: int
    size: int

    @property
    def name(self) -> str:
        what = {"prefill": f"prefill-{self.size}", "decode": f"decode@{self.size}",
                "forward": f"{self.size}px"}[self.kind]
        return f"{self.model}-{what}-b{self.batch}"


CASES: tuple[Case, ...] = (
    Case("lfm2", "prefill", 1, 128), Case("lfm2", "prefill", 8, 128),
    Case("lfm2", "decode", 1, 128), Case("lfm2", "decode", 8, 128),
    Case("mobilenet_v2", "forward", 1, 224), Case("mobilenet_v2", "forward", 32, 224),
)
# Not in a default run (nor in the GPU run's budget): `--cases lfm3` (or `lfm`, beside lfm2).
LFM3_CASES: tuple[Case, ...] = (
    Case("lfm3", "prefill", 1, 128), Case("lfm3", "prefill", 8, 128),
    Case("lfm3", "decode", 1, 128), Case("lfm3", "decode", 8, 128),
)
# --quick: one case of each kind at batch 1, shorter prompt (a smoke run for tests).
QUICK_CASES: tuple[Case, ...] = (
    Case("lfm2", "prefill", 1, 32), Case("lfm2", "decode", 1, 32),
    Case("mobilenet_v2", "forward", 1, 224),
)


def served_dtype(device: str) -> torch.dtype:
    """The dtype the service runs on `device` by default (Settings.resolved_dtype: bfloat16 on
    CUDA, float32 on CPU), so the benchmark times what is served."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def build_models(names: set[str], device: str, dtype: torch.dtype | None = None) -> dict[str, object]:
    """The served modules: the LFM2ForCausalLM and the BN-folded MobileNetV2, in `dtype`
    (default: served_dtype(device))."""
    from models.registry import build_model
    dtype = dtype or served_dtype(device)
    out = {}
    if "lfm2" in names:
        out["lfm2"] = build_model("lfm2", device=device, dtype=dtype).lm
    if "lfm3" in names:                          # lfm2-demo's LFM3 twin (K=7), seed 0 as served
        from models.lfm2 import LFM2ForCausalLM
        with torch.inference_mode(False):
            out["lfm3"] = LFM2ForCausalLM.from_preset("lfm3-demo", device=device, dtype=dtype)
    if "mobilenet_v2" in names:
        out["mobilenet_v2"] = build_model("mobilenet_v2", device=device, dtype=dtype).module
    return out


def make_call(case: Case, model, device: str):
    """A zero-arg closure running one forward of `case` (fixed random inputs, seed 0)."""
    g = torch.Generator().manual_seed(0)
    if case.model == "mobilenet_v2":
        x = torch.randn(case.batch, 3, case.size, case.size, generator=g)
        x = x.to(device, next(model.parameters()).dtype)           # the model's dtype, as served
        x = x.contiguous(memory_format=torch.channels_last)       # NHWC, as the served model
        return lambda: model(x)
    ids = torch.randint(0, 256, (case.batch, case.size), generator=g).to(device)
    if case.kind == "prefill":
        return lambda: model(ids)
    cache = model.new_cache(case.batch, case.size + 1)
    with torch.inference_mode():
        model(ids, cache=cache)                                     # fill: 128 slots
    length, positions = cache.length, cache.positions.clone()
    step = ids[:, -1:]

    def decode():
        cache.length = length                                       # rewind to the filled state
        cache.positions.copy_(positions)
        return model(step, cache=cache)
    return decode


def with_impl(fn, impl: str):
    from models.depthwise import use_impl

    def run():
        with use_impl(impl):
            return fn()
    return run


def depthwise_share(fn, device: str, runs: int) -> dict:
    """Median over `runs` forwards of (depthwise seconds, forward seconds, share)."""
    from models.profiling import depthwise_timer
    sync = timing.synchronizer(device)
    rows = []
    for _ in range(runs):
        with depthwise_timer() as t:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            total = time.perf_counter() - t0
        rows.append((t.seconds, total, t.calls))
    return {"dw_us": round(statistics.median(r[0] for r in rows) * 1e6, 3),
            "dw_forward_us": round(statistics.median(r[1] for r in rows) * 1e6, 3),
            "dw_share": round(statistics.median(r[0] / r[1] for r in rows), 4),
            "dw_calls": rows[0][2]}


def bench_case(case: Case, model, impls: list[str], device: str, *, budget_s: float,
               min_repeats: int, max_repeats: int, share_runs: int) -> list[dict]:
    """Records for one case: interleaved latencies, launches, depthwise share, speedups."""
    from models.profiling import count_launches
    fns, errors = {}, {}
    for impl in impls:
        try:
            fn = with_impl(make_call(case, model, device), impl)
            fn()                                                    # compile / fail early
            fns[impl] = fn
        except Exception as exc:                                    # record, don't abort
            errors[impl] = f"{type(exc).__name__}: {exc}"[:300]
    stats = timing.time_interleaved(fns, device=device, budget_s=budget_s, warmup=1,
                                    min_repeats=min_repeats, max_repeats=max_repeats) if fns else {}
    med = {n: s.median_us for n, s in stats.items()}
    records = []
    for impl in impls:
        rec = {"case": case.name, "model": case.model, "kind": case.kind, "batch": case.batch,
               "size": case.size, "impl": impl, "device": device, "median_us": None,
               "aten_ops": None, "cuda_kernels": None, "dw_share": None,
               "speedup_vs_per_group": None, "speedup_vs_native": None, "error": errors.get(impl)}
        if impl in stats:
            rec.update(stats[impl].as_dict())
            lc = count_launches(fns[impl])
            rec["aten_ops"], rec["cuda_kernels"] = lc.aten_ops, lc.cuda_kernels
            rec.update(depthwise_share(fns[impl], device, share_runs))
            for ref in ("per_group", "native"):
                if ref in med:
                    rec[f"speedup_vs_{ref}"] = round(med[ref] / med[impl], 3)
        records.append(rec)
    return records


def acceptance(records: list[dict]) -> dict:
    """The before/after claim on LFM2: per_group share >= 50% and auto share <= 5%, for the
    prefill and decode cases (each batch), with the measured shares."""
    out = {}
    for kind in ("prefill", "decode"):
        rows = {(r["case"], r["impl"]): r["dw_share"] for r in records
                if r["model"] == "lfm2" and r["kind"] == kind}
        cases = sorted({c for c, _ in rows})
        shares = {c: {"per_group": rows.get((c, "per_group")), "auto": rows.get((c, "auto"))}
                  for c in cases}
        ok = bool(cases) and all(s["per_group"] is not None and s["auto"] is not None
                                 and s["per_group"] >= 0.5 and s["auto"] <= 0.05
                                 for s in shares.values())
        out[kind] = {"shares": shares, "per_group_min": 0.5, "auto_max": 0.05, "met": ok}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench models", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="3 small cases, few repeats (smoke run)")
    p.add_argument("--out", default=str(LOCAL), help=out_help())
    p.add_argument("--impls", help=f"comma list from {IMPLS} (default: all that run on --device)")
    p.add_argument("--cases", help="comma list of substrings of case names to run")
    p.add_argument("--budget-s", type=positive(float), help="timing budget per case (default 3.0; quick 0.3)")
    p.add_argument("--share-runs", type=positive(int), help="forwards under depthwise_timer (default 3; quick 1)")
    p.add_argument("--threads", type=positive(int), help="torch.set_num_threads (default: torch's)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="model dtype (auto: as served, bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--update", action="store_true",
                   help="merge into the existing results: replace only the cases run now")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(p, args.device)
    impls = args.impls.split(",") if args.impls else [i for i in IMPLS if i != "fused" or args.device == "cuda"]
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        p.error(f"--impls must be a comma list of {IMPLS}, got unknown {bad}")
    cases = list(QUICK_CASES if args.quick else CASES)
    if args.cases:
        pool = cases + ([] if args.quick else list(LFM3_CASES))
        cases = [c for c in pool if any(s in c.name for s in args.cases.split(","))]
        if not cases:
            p.error(f"--cases {args.cases!r} matches none of {[c.name for c in (QUICK_CASES if args.quick else CASES)]}")
    check_out(p, args.out)
    budget = args.budget_s or (0.3 if args.quick else 3.0)
    reps = (2, 10) if args.quick else (5, 50)
    share_runs = args.share_runs or (1 if args.quick else 3)
    env = timing.environment(args.device)
    env["malloc_keep_freed"] = keep_freed_memory()
    t_start = time.perf_counter()
    records = []
    dtype = served_dtype(args.device) if args.dtype == "auto" else getattr(torch, args.dtype)
    with torch.inference_mode():
        models = build_models({c.model for c in cases}, args.device, dtype)
        for case in cases:
            rs = bench_case(case, models[case.model], impls, args.device, budget_s=budget,
                            min_repeats=reps[0], max_repeats=reps[1], share_runs=share_runs)
            records += rs
            print(f"{case.name:28s} " + "  ".join(
                f"{r['impl']}={r['median_us'] / 1e3:.2f}ms({r['dw_share']:.0%})" if r["median_us"] is not None
                else f"{r['impl']}=ERR" for r in rs), flush=True)
    stem = f"models-{args.device}" + ("-quick" if args.quick else "")
    out = Path(args.out)
    if args.update and (out / f"{stem}.json").exists():
        ran = {c.name for c in cases}
        kept = [r for r in json.loads((out / f"{stem}.json").read_text())["records"] if r["case"] not in ran]
        records = kept + records
    result = {"environment": env, "quick": args.quick,
              "settings": {"argv": timing.recorded_argv(list(sys.argv[1:] if argv is None else argv)),
                           "impls": impls, "budget_s": budget, "min_repeats": reps[0],
                           "max_repeats": reps[1], "share_runs": share_runs,
                           "lfm2_preset": "lfm2-demo", "dtype": str(dtype).removeprefix("torch."),
                           **({"lfm3_preset": "lfm3-demo"} if any(r["model"] == "lfm3" for r in records) else {}),
                           "wall_s": round(time.perf_counter() - t_start, 1)},
              "records": records, "acceptance": acceptance(records)}
    write_results(out, stem, result, write_markdown, write_plot)
    print(f"wrote {out / stem}.json, .md, .png ({result['settings']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
