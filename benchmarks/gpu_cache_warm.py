"""Fill the on-disk compile caches before benchmarks/gpu.py needs them, beside gpu.sh's CUDA tests.

    python benchmarks/gpu_cache_warm.py [--budget-s 90] [--threads 8] [--workers 4] [--out DIR] [--smoke]

Why: two compilers run inside gpu.py's timed steps, and both keep what they compile on disk,
keyed by what they compiled (a later process that asks again loads it: for torch.compile on this
host's CPU 0.88 s -> 0.06 s a shape class):
- Triton, for the fused kernels: the prewarm step compiles every variant the run launches
  (~600), and the second H200 run's cut 236 of them at its budget, left to compile inside the
  ops steps, which then cut 26 + 46 shapes. Here one process makes the same jobs
  (gpu_prewarm.step_jobs) and compiles them on --threads threads into Triton's cache
  (TRITON_CACHE_DIR, default ~/.triton/cache): the prewarm step's compiles become loads.
- torch.compile, for the `compiled` impl: one compile per shape class, one after another in the
  correctness step (63 classes; the second run cut 15), and the ops step's compiled shapes.
  --workers processes make exactly those calls (gpu_checks.check with impl "compiled", the ops
  step's compiled calls under inference mode), inductor compiling in-process
  (TORCHINDUCTOR_COMPILE_THREADS=1: the workers are the parallelism; not in its cache key),
  into its FX graph cache (TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_<user>).
The CUDA tests leave most cores idle for a minute or two: gpu.sh starts this first, in the
background, and waits for it before gpu.py. Jobs not started by --budget-s are skipped (gpu.py
then compiles them as before). Writes cache-warm.json under --out (default
benchmarks/results/local/) and prints a summary. --smoke: CPU, two smoke cases in float32 for
torch.compile; no Triton part (the interpreter compiles nothing).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks.cli_args import check_out, positive, smoke_or_cuda  # noqa: E402
from benchmarks.results_files import LOCAL  # noqa: E402

SMOKE_CASES = ("conv1d-causal", "conv2d-nchw-s1")


def compiled_jobs(smoke: bool) -> list[tuple]:
    """("check", case, dtype) for every correctness row of `compiled`, then ("ops", shape) for the
    float32 ops shapes the ops step times `compiled` on (gpu_steps._ops_impls' rule)."""
    from benchmarks import gpu_checks, gpu_report, ops
    from benchmarks.gpu_config import COMPILED_MIN_BYTES
    if smoke:
        return [("check", name, "float32") for name in SMOKE_CASES]
    out = [("check", c.name, d) for d in gpu_checks.DTYPES for c in gpu_checks.CASES]
    return out + [("ops", s.name) for s in ops.SUITE
                  if gpu_report.min_bytes({"shape": ops.shape_dict(s), "dtype": "float32"}) >= COMPILED_MIN_BYTES]


def run_compiled_job(job: tuple, device: str) -> None:
    """The call gpu.py makes for this job, with impl "compiled" (its result is not kept)."""
    import torch

    from benchmarks import gpu_checks, ops
    if job[0] == "check":
        cases = gpu_checks.SMOKE_CASES if device == "cpu" else gpu_checks.CASES
        case = next(c for c in cases if c.name == job[1])
        row = gpu_checks.check(case, gpu_checks.DTYPES[job[2]], "compiled", device)
        if row.get("error"):
            raise RuntimeError(row["error"])
        return
    shape = next(s for s in ops.SUITE if s.name == job[1])
    with torch.inference_mode():
        ops.make_call(shape, "compiled", torch.float32, device)()


def _compiled_worker(shard: list, device: str, deadline: float) -> list[dict]:
    """Run the shard's jobs until `deadline` (time.time()); one record each."""
    records = []
    for job in shard:
        if time.time() > deadline:
            records.append({"job": list(job), "status": "skipped"})
            continue
        t0 = time.perf_counter()
        try:
            run_compiled_job(job, device)
            records.append({"job": list(job), "status": "compiled", "s": round(time.perf_counter() - t0, 2)})
        except Exception as e:  # noqa: BLE001 - the step that runs it later reports it too
            records.append({"job": list(job), "status": "failed", "error": f"{type(e).__name__}: {e}"[:200]})
    return records


def _triton_worker(device: str, deadline: float, threads: int) -> dict:
    """gpu.py's prewarm step, every step selected, into Triton's disk cache (its own budget)."""
    import torch

    from benchmarks import gpu_config, gpu_prewarm
    from benchmarks import models as bench_models
    if not gpu_prewarm.available():
        return {"jobs": 0, "note": "Triton's interpreter: nothing to compile"}
    try:
        cfg = gpu_config.settings(device, False)
        with torch.inference_mode():
            models = bench_models.build_models({c.model for c in cfg["models_cases"]}, device)
        jobs = gpu_prewarm.step_jobs(device, False, gpu_config.STEPS, cfg, models)
    except Exception as e:  # noqa: BLE001 - the prewarm step then compiles everything, as before
        return {"jobs": 0, "failed": 1, "note": f"recording the jobs failed: {type(e).__name__}: {e}"[:300]}
    left = deadline - time.time()
    return gpu_prewarm.prewarm(jobs, time.perf_counter() + left, workers=threads)


def warm(device: str, smoke: bool, budget_s: float, threads: int, workers: int) -> dict:
    """The Triton part in one spawned process, the torch.compile jobs dealt round-robin to
    `workers` more; -> both parts' counts and the torch.compile records."""
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"      # inherited by the spawned processes
    t0, deadline = time.perf_counter(), time.time() + budget_s
    jobs = compiled_jobs(smoke)
    shards = [s for s in (jobs[i::workers] for i in range(workers)) if s]
    ctx = multiprocessing.get_context("spawn")            # no CUDA state forked from this process
    with ctx.Pool(len(shards) + (0 if smoke else 1)) as pool:
        triton = None if smoke else pool.apply_async(_triton_worker, (device, deadline, threads))
        parts = pool.starmap(_compiled_worker, [(s, device, deadline) for s in shards])
        triton = {"jobs": 0, "note": "smoke: none"} if triton is None else triton.get()
    records = [r for part in parts for r in part]
    counts = {k: sum(r["status"] == k for r in records) for k in ("compiled", "skipped", "failed")}
    return {"device": device, "wall_s": round(time.perf_counter() - t0, 1), "triton": triton,
            "torch_compile": {"workers": len(shards), "jobs": len(jobs), **counts, "cache_dir": _cache_dir(),
                              "records": records}}


def _cache_dir() -> str:
    """Where inductor caches (TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_<user>)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        return cache_dir()
    except ImportError:                 # an older torch: the setting, or unknown
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=positive(float), default=90.0, help="stop starting jobs after this")
    ap.add_argument("--threads", type=positive(int), default=8, help="Triton compile threads (default 8)")
    ap.add_argument("--workers", type=positive(int), default=4, help="torch.compile processes (default 4)")
    ap.add_argument("--out", type=Path, default=LOCAL, help="results folder (default benchmarks/results/local)")
    ap.add_argument("--smoke", action="store_true", help="CPU, two smoke cases in float32, no Triton part")
    args = ap.parse_args(argv)
    check_out(ap, args.out)
    device = smoke_or_cuda(ap, args.smoke)
    result = warm(device, args.smoke, args.budget_s, args.threads, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache-warm.json").write_text(json.dumps(result, indent=1))
    tri, tc = result["triton"], result["torch_compile"]
    print(f"cache-warm ({result['wall_s']} s): Triton {tri.get('compiled', 0)}/{tri['jobs']} kernel variants "
          f"({tri.get('skipped', 0)} skipped, {tri.get('failed', 0)} failed{'; ' + tri['note'] if 'note' in tri else ''}); "
          f"torch.compile {tc['compiled']}/{tc['jobs']} shape classes on {tc['workers']} processes "
          f"({tc['skipped']} skipped, {tc['failed']} failed), cache {tc['cache_dir']}")
    for r in tc["records"]:
        if r["status"] == "failed":
            print(f"  {r['job']}: {r['error']}")
    return 1 if tc["failed"] or tri.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
