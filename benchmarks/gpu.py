"""Every GPU number the project needs, in one bounded run (and a CPU smoke of the same code).

    python benchmarks/gpu.py [--out DIR] [--device cuda|cpu] [--smoke] [--steps a,b,..] [--tag T]
                             [--budget-scale F]
    bash benchmarks/gpu.sh [same flags]    # the device call: CUDA tests, then this; timeouts, logs in $OUT

Steps, in order, each timed; each stops starting new work at its budget (gpu_config.py:
BUDGETS_CUDA and TOTAL_CUDA_S: 400 s for all steps together) and lists what
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
Files under --out (default benchmarks/results/local/, git-ignored; gpu.sh: $OUT, the device tool's
result folder), tag "h200" on an H200, else the device type ("cuda"); "smoke" with --smoke:
  correctness-<tag>.{json,md} copy-<tag>.json ops-<tag>[-bfloat16].{json,md,png}
  models-<tag>.{json,md,png} decode-<tag>.{json,md} layouts-<tag>.{json,md} gpu-summary-<tag>.{json,md}
  autotune-<tag>.json (every autotuner's pick per key: which tile each layer got)
The committed CPU results (ops-cpu.*, models-cpu.*, serve-cpu.*) are never written; the GPU files
reach benchmarks/results/ by hand (docs/GPU_RUN.md) or with `--out benchmarks/results`.
On CUDA, `compiled` (one torch.compile per shape class, seconds each) is timed in the float32
ops pass on shapes moving >= COMPILED_MIN_BYTES only, and not in the models step: everywhere
else every impl is launch-bound and compiling would not fit the budget. The smoke run skips
compiled (inductor's C++ build takes seconds per shape on 2 cores) and keeps fused tiny
(it runs in the Triton interpreter there).
Exit status: 0 ok; 1 an impl failed correctness; 2 a step crashed or the run was interrupted
(SIGTERM from `timeout`: everything measured so far is still written); 3 both.
The steps are gpu_steps.py (step_<name>), the run they share and its file writer gpu_run.py;
this file is the CLI: it picks the steps, runs each under its budget and writes the summary.
"""
from __future__ import annotations

import argparse
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

from benchmarks import gpu_report, gpu_summary  # noqa: E402
from benchmarks.gpu_config import STEPS  # noqa: E402
from benchmarks.gpu_run import Interrupted, Run  # noqa: E402
from benchmarks.gpu_steps import (step_copy, step_correctness, step_decode, step_env, step_layouts,  # noqa: E402
                                  step_models, step_ops, step_prewarm)
from benchmarks.results_files import LOCAL, out_help  # noqa: E402

PREWARMED = ("correctness", "ops-float32", "ops-bfloat16", "models", "layouts")   # launches prewarm compiles


def _autotune_picks() -> list[dict]:
    """Which config each fused autotune key got in this run ([] without Triton)."""
    try:
        from models.depthwise import triton_autotune
    except ImportError:
        return []
    return triton_autotune.picks()


def _on_sigterm(signum, frame):
    raise Interrupted(f"signal {signum} (timeout?)")


def main(argv: list[str] | None = None, *, handle_signals: bool = False) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(LOCAL), help=out_help())
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
    run.write_json(f"autotune-{run.tag}.json", {"environment": run.env, "picks": _autotune_picks()})
    md = run.path(f"gpu-summary-{run.tag}.md")       # registered first: listed in the summary
    s = gpu_report.summarize(run, record, interrupted)
    run.write_json(f"gpu-summary-{run.tag}.json", s)
    gpu_summary.write_summary_md(s, md)
    print(gpu_summary.final_table(s, run.out), flush=True)
    return s["exit_code"]


if __name__ == "__main__":
    sys.exit(main(handle_signals=True))
