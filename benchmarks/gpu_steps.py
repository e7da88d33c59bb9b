"""The steps of benchmarks/gpu.py, one function each: `step_<name>(run, deadline) -> skipped`
(the names of what it left out at its deadline), writing its files through `run` (gpu_run.py)
as it goes, and in a `finally` what it measured before an interruption.

Imported by gpu.py on the device's python: torch and benchmarks/ only (no service/, no
fastapi/pydantic/orjson)."""
from __future__ import annotations

import json
import time

import torch

from benchmarks import gpu_checks, gpu_copy, gpu_decode, gpu_layouts, gpu_prewarm, gpu_report, gpu_summary, ops, plots
from benchmarks import models as bench_models
from benchmarks.gpu_config import COMPILED_MIN_BYTES
from benchmarks.gpu_run import Run
from benchmarks.models_report import write_markdown as models_md, write_plot as models_png


def step_env(run: Run, deadline: float) -> list:
    print(json.dumps({k: run.env.get(k) for k in ("device_name", "gpu_driver", "torch", "triton", "cuda",
                                                   "cudnn", "gpu_capability", "cpu_count", "git_commit")}))
    return []


def _built_models(run: Run) -> dict:
    """The models step's modules, built once (the prewarm step records their launches too)."""
    if run.built_models is None:
        run.built_models = bench_models.build_models({c.model for c in run.cfg["models_cases"]}, run.device)
    return run.built_models


def step_prewarm(run: Run, deadline: float) -> list:
    if not gpu_prewarm.available():
        print("prewarm: nothing to compile (Triton's interpreter runs the kernels)")
        return []
    steps, models = run.budget.steps, None       # record only what the selected steps launch
    if "models" in steps:
        with torch.inference_mode():
            models = _built_models(run)
    jobs = gpu_prewarm.step_jobs(run.device, run.smoke, steps, run.cfg, models)
    res = run.prewarm = gpu_prewarm.prewarm(jobs, deadline)
    print(f"prewarm: {res['compiled']}/{res['jobs']} kernel variants compiled on {res['workers']} threads in "
          f"{res['wall_s']} s; {res['skipped']} skipped, {res['failed']} failed, {res['unfinished']} unfinished")
    for err in res["errors"]:
        print(f"  {err}")
    left = res["skipped"] + res["unfinished"]
    return [f"{left} variants"] if left else []


def step_correctness(run: Run, deadline: float) -> list:
    cases = gpu_checks.SMOKE_CASES if run.smoke else gpu_checks.CASES
    impls, dtypes, rows = run.cfg["check_impls"], list(gpu_checks.DTYPES), []
    try:
        gpu_checks.run(impls, dtypes, run.device, deadline, cases, rows=rows)
    finally:                                  # interrupted too: what was checked is written
        res = run.correctness = gpu_checks.tally(rows, impls, dtypes, cases)
        res["compiled_cache"] = _compiled_cache()
        run.write_json(f"correctness-{run.tag}.json", {"environment": run.env, **res})
        gpu_checks.write_markdown(res, run.path(f"correctness-{run.tag}.md"), run.env)
    print(f"correctness: {res['passed']}/{res['checked']} passed, {res['skipped']} skipped; compiled impl's "
          f"shape classes loaded from inductor's cache (gpu_cache_warm.py) / compiled: {res['compiled_cache']}")
    for f in res["failed"]:
        print(f"  FAIL {f}")
    return [f"{r['impl']}/{r['dtype']}/{r['case']}" for r in res["rows"] if r.get("skipped")]


def _compiled_cache() -> dict:
    """Inductor's FX graph cache hits and misses in this process so far (None before any compile)."""
    import sys
    if "torch._dynamo" not in sys.modules:    # nothing compiled: don't import dynamo to say so
        return {"hit": None, "miss": None}
    from torch._dynamo.utils import counters
    return {k: counters["inductor"][f"fxgraph_cache_{k}"] for k in ("hit", "miss")}


def step_copy(run: Run, deadline: float) -> list:
    run.copy = gpu_copy.copy_ceiling(run.device, run.cfg["copy_bytes"], run.cfg["copy_reps"])
    run.write_json(f"copy-{run.tag}.json", {"environment": run.env, **run.copy})
    print(f"copy ceiling: {run.copy['gbps']:,.1f} GB/s (best {run.copy['gbps_best']:,.1f})")
    return []


def _ops_impls(run: Run, shape: ops.Shape, dtype: str) -> list[str]:
    """The impls timed on `shape`: on CUDA, compiled only on big float32 shapes and per_group only
    on cfg["ops_per_group"] (None: everywhere)."""
    impls = list(run.cfg["ops_impls"])
    only = run.cfg.get("ops_per_group")
    if "per_group" in impls and run.device == "cuda" and only is not None and shape.name not in only:
        impls.remove("per_group")
    if "compiled" in impls and run.device == "cuda":
        if dtype != "float32" or gpu_report.min_bytes({"shape": ops.shape_dict(shape), "dtype": dtype}) \
                < COMPILED_MIN_BYTES:
            impls.remove("compiled")
    return impls


def step_ops(run: Run, deadline: float, dtype: str) -> list:
    cfg, recs, skipped = run.cfg, [], []
    try:
        with torch.inference_mode():
            for shape in cfg["ops_shapes"]:
                if time.perf_counter() > deadline:
                    skipped.append(shape.name)
                    continue
                rs = ops.bench_shape(shape, _ops_impls(run, shape, dtype), ops.DTYPES[dtype], run.device,
                                     run.env, cfg["ops_budget_s"], *cfg["ops_reps"], max_fn_s=3 * cfg["ops_budget_s"])
                recs += rs
                phases = rs[0].get("phase_s", {})       # the shape's seconds: warm-up, timing, graphs, counts
                print(f"{dtype:8s} {shape.name:30s} " + "  ".join(
                    f"{r['impl']}={r['median_us']:.1f}" if r["median_us"] is not None else f"{r['impl']}=ERR"
                    for r in rs) + f"  auto->{rs[0]['auto_choice']}  ("
                    + " ".join(f"{k} {v:.2f}" for k, v in phases.items()) + " s)", flush=True)
    finally:                                  # interrupted too: the shapes measured are written
        _write_ops(run, dtype, recs)
    return skipped


def _write_ops(run: Run, dtype: str, recs: list[dict]) -> None:
    """ops-<tag>[-<dtype>].{json,md,png} in suite order, as ops.py writes them, + bandwidth."""
    order = {s.name: i for i, s in enumerate(ops.SUITE)}
    recs.sort(key=lambda r: order.get(r["shape"]["name"], len(order)))       # suite order, as ops.py
    gpu_report.add_bandwidth(recs, run.copy["gbps"] if run.copy else None)
    run.ops[dtype] = recs
    if recs:
        stem = f"ops-{run.tag}" + ("" if dtype == "float32" else f"-{dtype}")
        run.write_json(f"{stem}.json", recs)
        ops.write_markdown(recs, run.path(f"{stem}.md"), run.env, run.smoke)
        plots.channel_sweep(recs, run.path(f"{stem}.png"), run.env)


def step_models(run: Run, deadline: float) -> list:
    cfg, recs, skipped, t0 = run.cfg, [], [], time.perf_counter()
    try:
        with torch.inference_mode():
            built = _built_models(run)
            for case in cfg["models_cases"]:
                if time.perf_counter() > deadline:
                    skipped.append(case.name)
                    continue
                rs = bench_models.bench_case(case, built[case.model], cfg["models_impls"], run.device,
                                             budget_s=cfg["models_budget_s"], min_repeats=cfg["models_reps"][0],
                                             max_repeats=cfg["models_reps"][1], share_runs=cfg["share_runs"])
                recs += rs
                print(f"{case.name:28s} " + "  ".join(
                    f"{r['impl']}={r['median_us'] / 1e3:.2f}ms({r['dw_share']:.0%})" if r["median_us"] is not None
                    else f"{r['impl']}=ERR" for r in rs), flush=True)
    finally:                                  # interrupted too: the cases measured are written
        _write_models(run, recs, skipped, time.perf_counter() - t0)
    return skipped


def _write_models(run: Run, recs: list[dict], skipped: list[str], wall_s: float) -> None:
    cfg = run.cfg
    run.models = {"environment": run.env, "quick": run.smoke,
                  "settings": {"argv": run.env["argv"], "impls": cfg["models_impls"], "budget_s": cfg["models_budget_s"],
                               "min_repeats": cfg["models_reps"][0], "max_repeats": cfg["models_reps"][1],
                               "share_runs": cfg["share_runs"], "lfm2_preset": "lfm2-demo", "skipped": skipped,
                               "dtype": str(bench_models.served_dtype(run.device)).removeprefix("torch."),
                               "wall_s": round(wall_s, 1)},
                  "records": recs, "acceptance": bench_models.acceptance(recs)}
    if recs:
        run.write_json(f"models-{run.tag}.json", run.models)
        models_md(run.models, run.path(f"models-{run.tag}.md"))
        models_png(run.models, run.path(f"models-{run.tag}.png"))


def step_decode(run: Run, deadline: float) -> list:
    cfg, rows, skipped = run.cfg, [], []
    run.decode = rows                         # filled as measured: the summary sees partial rows
    try:
        gpu_decode.run(cfg["presets"], cfg["batches"], cfg["prompt"], cfg["new_tokens"], run.device,
                       cfg["decode_dtype"], deadline, cfg["decode_max_s"], rows, skipped)
    finally:                                  # interrupted too: the rows measured are written
        run.write_rows("decode", "LFM2 decoding before/after", gpu_decode.__doc__, rows, skipped,
                       gpu_summary.decode_table(rows))
    return skipped


def step_layouts(run: Run, deadline: float) -> list:
    cfg, rows, skipped = run.cfg, [], []
    run.layouts = rows                        # filled as measured: the summary sees partial rows
    try:
        gpu_layouts.run(run.device, cfg["layouts_dtypes"], deadline, rows, skipped, cfg["layouts_budget_s"],
                        cfg["layouts_reps"], *cfg["layouts"])
    finally:                                  # interrupted too: the rows measured are written
        table = gpu_layouts.table(rows)
        run.write_rows("layouts", "Fused weight layouts A/B", gpu_layouts.__doc__, rows, skipped, table)
    for line in table[2:]:
        print(line)
    return skipped
