"""Every GPU number the project needs, in one bounded run (and a CPU smoke of the same code).

    python benchmarks/gpu.py [--out DIR] [--device cuda|cpu] [--smoke] [--steps a,b,..] [--tag T]
                             [--budget-scale F]
    bash benchmarks/gpu.sh [same flags]    # the device call: CUDA tests, then this; timeouts, logs in $OUT

Steps, in order, each timed; each stops starting new work at its budget (gpu_config.py:
BUDGETS_CUDA and TOTAL_CUDA_S: 450 s for all steps together) and lists what
it skipped (a second call can fill gaps: --steps ops-bfloat16 --budget-scale 3; prewarm and, for
an ops step, copy are added):
  env          GPU name, driver (nvidia-smi), torch/triton/CUDA/cuDNN versions, TF32 flags:
               in every JSON written
  prewarm      compile every fused-kernel variant the later steps launch, on every core, before
               anything is timed (gpu_prewarm.py; nothing to do under Triton's interpreter)
  correctness  every impl x dtype x case against a float64 reference (gpu_checks.py)
  copy         the copy-bandwidth ceiling: a device-to-device copy, 2 x 1 GiB (smoke: 16 MiB)
  ops-float32, ops-bfloat16   benchmarks/ops.py's suite through its own functions, plus per
               record min_bytes / achieved_gbps / copy_fraction (gpu_report.py)
  models       benchmarks/models.py's cases through its own functions
  decode       LFM2 decoding before/after and as served (continuous batch): tokens/s, kernels and
               host launches per token
  layouts      the channels-inner fused kernels with tap-major vs channel-major weights, A/B
               (gpu_layouts.py): does the tap-major copy pay on the device
  summary      the acceptance checks from the results; a short table printed LAST
Files under --out, tag "h200" on an H200, else the device type ("cuda"); "smoke" with --smoke:
  correctness-<tag>.{json,md} copy-<tag>.json ops-<tag>[-bfloat16].{json,md,png}
  models-<tag>.{json,md,png} decode-<tag>.{json,md} layouts-<tag>.{json,md} gpu-summary-<tag>.{json,md}
The committed CPU results (ops-cpu.*, models-cpu.*, serve-cpu.*) are never written.
On CUDA, `compiled` (one torch.compile per shape class, seconds each) is timed in the float32
ops pass on shapes moving >= COMPILED_MIN_BYTES only, and not in the models step: everywhere
else every impl is launch-bound and compiling would not fit the budget. The smoke run skips
compiled (inductor's C++ build takes seconds per shape on 2 cores) and keeps fused tiny
(it runs in the Triton interpreter there).
Exit status: 0 ok; 1 an impl failed correctness; 2 a step crashed or the run was interrupted
(SIGTERM from `timeout`: everything measured so far is still written); 3 both.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
# `python benchmarks/gpu.py` puts benchmarks/ first on sys.path, where benchmarks/models.py
# would shadow the `models` package: drop that entry, put the repository root first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import gpu_checks, gpu_copy, gpu_decode, gpu_layouts, gpu_prewarm, gpu_report, ops, plots  # noqa: E402
from benchmarks import models as bench_models  # noqa: E402
from benchmarks.gpu_config import COMPILED_MIN_BYTES, STEPS, Budget, environment, run_tag, settings  # noqa: E402
from benchmarks.models_report import write_markdown as models_md, write_plot as models_png  # noqa: E402

PROTECTED = ("ops-cpu.", "models-cpu.", "serve-cpu.")           # committed CPU results
PREWARMED = ("correctness", "ops-float32", "ops-bfloat16", "models", "layouts")   # launches prewarm compiles


class Interrupted(BaseException):
    """SIGTERM (from `timeout`): stop measuring, still write the summary."""


def _on_sigterm(signum, frame):
    raise Interrupted(f"signal {signum} (timeout?)")


class Run:
    """Everything one run shares: device, settings, output names, results so far."""

    def __init__(self, args, argv, steps):
        self.device, self.smoke, self.out = args.device, args.smoke, Path(args.out)
        self.cfg = settings(self.device, self.smoke)
        self.budget = Budget(self.cfg["budgets"], self.cfg["total_s"], steps, args.budget_scale)
        self.env = environment(self.device, argv)
        gpu = (self.env.get("gpu") or "") + " " + ((self.env.get("nvidia_smi") or {}).get("name") or "")
        self.tag = args.tag or run_tag(self.device, self.smoke, gpu)
        self.files, self.ops, self.copy, self.correctness, self.decode, self.models = [], {}, None, None, [], None
        self.layouts = None
        self.prewarm, self.built_models = None, None
        self.t0 = self.budget.t0

    def path(self, name: str) -> Path:
        if name.startswith(PROTECTED):
            raise RuntimeError(f"refusing to write {name}: committed CPU results; pass another --tag")
        self.out.mkdir(parents=True, exist_ok=True)
        self.files.append(name)
        return self.out / name

    def write_json(self, name: str, obj) -> None:
        self.path(name).write_text(json.dumps(obj, indent=1, default=str) + "\n")

    def write_rows(self, stem: str, title: str, doc: str, rows: list, skipped: list, table: list[str]) -> None:
        """<stem>-<tag>.json (environment, rows, skipped, doc) and .md (title, doc, table)."""
        self.write_json(f"{stem}-{self.tag}.json", {"environment": self.env, "rows": rows, "skipped": skipped,
                                                    "doc": doc})
        self.path(f"{stem}-{self.tag}.md").write_text(
            f"# {title} ({self.env['device_name']})\n\n{doc}\n" + "\n".join(table) + "\n")


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
    steps, cfg = run.budget.steps, run.cfg       # record only what the selected steps launch
    cases = (gpu_checks.SMOKE_CASES if run.smoke else gpu_checks.CASES) if "correctness" in steps else ()
    ops_dtypes = [ops.DTYPES[s.removeprefix("ops-")] for s in steps if s.startswith("ops-")]
    models = None
    if "models" in steps:
        with torch.inference_mode():
            models = _built_models(run)
    layouts = gpu_layouts.calls(run.device, cfg["layouts_dtypes"], *cfg["layouts"]) if "layouts" in steps else ()
    jobs = gpu_prewarm.record_jobs(run.device, cases, cfg["ops_shapes"], cfg["models_cases"], models, ops_dtypes,
                                   extra_calls=(call for _, call in layouts))
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
        run.write_json(f"correctness-{run.tag}.json", {"environment": run.env, **res})
        gpu_checks.write_markdown(res, run.path(f"correctness-{run.tag}.md"), run.env)
    print(f"correctness: {res['passed']}/{res['checked']} passed, {res['skipped']} skipped")
    for f in res["failed"]:
        print(f"  FAIL {f}")
    return [f"{r['impl']}/{r['dtype']}/{r['case']}" for r in res["rows"] if r.get("skipped")]


def step_copy(run: Run, deadline: float) -> list:
    run.copy = gpu_copy.copy_ceiling(run.device, run.cfg["copy_bytes"], run.cfg["copy_reps"])
    run.write_json(f"copy-{run.tag}.json", {"environment": run.env, **run.copy})
    print(f"copy ceiling: {run.copy['gbps']:,.1f} GB/s (best {run.copy['gbps_best']:,.1f})")
    return []


def _ops_impls(run: Run, shape: ops.Shape, dtype: str) -> list[str]:
    impls = list(run.cfg["ops_impls"])
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
                print(f"{dtype:8s} {shape.name:30s} " + "  ".join(
                    f"{r['impl']}={r['median_us']:.1f}" if r["median_us"] is not None else f"{r['impl']}=ERR"
                    for r in rs) + f"  auto->{rs[0]['auto_choice']}", flush=True)
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
                rs = bench_models.bench_case(case, built[case.model], cfg["models_impls"], run.device, run.env,
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
                       gpu_report.decode_table(rows))
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


def main(argv: list[str] | None = None, *, handle_signals: bool = False) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(_REPO / "benchmarks" / "results"))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny shapes and few repeats (the CPU test)")
    p.add_argument("--steps", help=f"comma list from {STEPS} (default all)")
    p.add_argument("--tag", help="file tag (default h200 / cuda / smoke / cpu-full)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every step budget and the total (e.g. 3 for a second call with --steps)")
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    steps = args.steps.split(",") if args.steps else list(STEPS)
    if bad := [s for s in steps if s not in STEPS]:
        p.error(f"--steps: unknown {bad}; choose from {STEPS}")
    if "prewarm" not in steps and any(s in PREWARMED for s in steps):
        steps.append("prewarm")                 # a gap-filling call compiles up front too
        print("--steps: prewarm added (it compiles what the selected steps launch)")
    if "copy" not in steps and any(s.startswith("ops-") for s in steps):
        steps.append("copy")                    # the ops records' copy fractions need this run's ceiling
        print("--steps: copy added (the memory-bound check compares fused with this run's copy ceiling)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    if args.device == "cpu":      # fused runs only in Triton's interpreter on CPU (read at kernel import)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if args.smoke:      # 1 thread: OpenMP teams spinning against other jobs on a shared CI box
        torch.set_num_threads(1)   # cost 10x in user time (thousands of tiny per_group ops)
    if handle_signals:
        signal.signal(signal.SIGTERM, _on_sigterm)
    run = Run(args, argv, [s for s in STEPS if s in steps])
    fns = {"env": step_env, "prewarm": step_prewarm, "correctness": step_correctness, "copy": step_copy,
           "models": step_models, "layouts": step_layouts,
           "decode": step_decode, "ops-float32": lambda r, d: step_ops(r, d, "float32"),
           "ops-bfloat16": lambda r, d: step_ops(r, d, "bfloat16")}
    record, interrupted = {}, False
    for name in STEPS:
        if name not in steps:
            continue
        deadline, granted = run.budget.deadline(name)
        st = record[name] = {"status": "running", "budget_s": granted}
        print(f"==== {name} (budget {granted} s, at {time.perf_counter() - run.t0:.0f} s) ====", flush=True)
        t = time.perf_counter()
        try:
            st["skipped"] = fns[name](run, deadline)
            st["status"] = "partial" if st["skipped"] else "ok"
        except Interrupted as exc:
            st.update(status="interrupted", error=str(exc))
            interrupted = True
        except Exception as exc:                       # record, keep going: other steps still run
            st.update(status="error", error=f"{type(exc).__name__}: {exc}"[:400])
            traceback.print_exc()
        st["wall_s"] = round(time.perf_counter() - t, 1)
        if interrupted:
            break
    for name in run.budget.steps:
        record.setdefault(name, {"status": "not run"})
    md = run.path(f"gpu-summary-{run.tag}.md")       # registered first: listed in the summary
    s = gpu_report.summarize(run, record, interrupted)
    run.write_json(f"gpu-summary-{run.tag}.json", s)
    gpu_report.write_summary_md(s, md)
    print(gpu_report.final_table(s, run.out), flush=True)
    return s["exit_code"]


if __name__ == "__main__":
    sys.exit(main(handle_signals=True))
