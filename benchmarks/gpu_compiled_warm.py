"""Fill torch.compile's on-disk caches for the `compiled` impl before benchmarks/gpu.py needs them.

    python benchmarks/gpu_compiled_warm.py [--workers 6] [--budget-s 100] [--out DIR] [--smoke]

Why: `compiled` compiles once per shape class (models/depthwise/compiled.py), ~1-2 s each on the
GPU host, one after another inside gpu.py's correctness step, which runs it last (COST_GROUPS):
21 cases x 3 dtypes = 63 classes there, and the second H200 run's step cut 15 of them
(h200-2026-12-04-2/correctness-h200.json), which leaves issue 6's correctness check incomplete.
Inductor keeps what it compiled on disk (its FX graph cache and Triton's kernel cache, keyed by
the graph, the inputs' shapes/strides/dtypes and its config; the compile-thread count is not in
the key): a later process that traces the same call loads the compiled code instead of compiling
it (on this host's CPU: 0.88 s -> 0.06 s a class). benchmarks/gpu.sh runs this in the background
beside the CUDA tests, whose minute or two leaves most cores idle, so gpu.py's correctness step
(and the ops step's compiled shapes) find the caches full.

Each worker process makes exactly the calls gpu.py will make (gpu_checks.check with impl
"compiled", the ops step's compiled calls under inference mode), the jobs dealt round-robin,
correctness first; inductor compiles in-process (TORCHINDUCTOR_COMPILE_THREADS=1: the workers
are the parallelism). Stops starting jobs at --budget-s. Writes compiled-warm.json under --out
(default benchmarks/results/local/) and prints a summary line. --smoke: CPU, two smoke cases
in float32 (what CI runs).
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

from benchmarks.cli_args import check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL  # noqa: E402

SMOKE_CASES = ("conv1d-causal", "conv2d-nchw-s1")


def jobs(smoke: bool) -> list[tuple]:
    """("check", case, dtype) for every correctness row of `compiled`, then ("ops", shape) for the
    float32 ops shapes the ops step times `compiled` on (gpu_steps._ops_impls' rule)."""
    from benchmarks import gpu_checks, gpu_report, ops
    from benchmarks.gpu_config import COMPILED_MIN_BYTES
    if smoke:
        return [("check", name, "float32") for name in SMOKE_CASES]
    out = [("check", c.name, d) for d in gpu_checks.DTYPES for c in gpu_checks.CASES]
    return out + [("ops", s.name) for s in ops.SUITE
                  if gpu_report.min_bytes({"shape": ops.shape_dict(s), "dtype": "float32"}) >= COMPILED_MIN_BYTES]


def run_job(job: tuple, device: str) -> None:
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


def _worker(shard: list, device: str, deadline: float) -> list[dict]:
    """Run the shard's jobs until `deadline` (time.time()); one record each."""
    records = []
    for job in shard:
        if time.time() > deadline:
            records.append({"job": list(job), "status": "skipped"})
            continue
        t0 = time.perf_counter()
        try:
            run_job(job, device)
            records.append({"job": list(job), "status": "compiled", "s": round(time.perf_counter() - t0, 2)})
        except Exception as e:  # noqa: BLE001 - the step that runs it later reports it too
            records.append({"job": list(job), "status": "failed", "error": f"{type(e).__name__}: {e}"[:200]})
    return records


def warm(all_jobs: list, device: str, workers: int, budget_s: float) -> dict:
    """Deal the jobs round-robin to `workers` spawned processes; -> counts and every record."""
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"      # inherited by the spawned workers
    t0, deadline = time.perf_counter(), time.time() + budget_s
    shards = [all_jobs[i::workers] for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")            # no CUDA state forked from this process
    with ctx.Pool(len([s for s in shards if s])) as pool:
        parts = pool.starmap(_worker, [(s, device, deadline) for s in shards if s])
    records = [r for part in parts for r in part]
    counts = {k: sum(r["status"] == k for r in records) for k in ("compiled", "skipped", "failed")}
    return {"device": device, "workers": workers, "jobs": len(all_jobs), **counts,
            "wall_s": round(time.perf_counter() - t0, 1), "cache_dir": _cache_dir(), "records": records}


def _cache_dir() -> str:
    """Where inductor caches (TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_<user>)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        return cache_dir()
    except ImportError:                 # an older torch: the setting, or unknown
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=positive(int), default=6, help="worker processes (default 6)")
    ap.add_argument("--budget-s", type=positive(float), default=100.0, help="stop starting jobs after this")
    ap.add_argument("--out", type=Path, default=LOCAL, help="results folder (default benchmarks/results/local)")
    ap.add_argument("--smoke", action="store_true", help="CPU, two smoke cases in float32")
    args = ap.parse_args(argv)
    check_out(ap, args.out)
    import torch
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("needs CUDA (or --smoke)")
    result = warm(jobs(args.smoke), device, args.workers, args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compiled-warm.json").write_text(json.dumps(result, indent=1))
    print(f"compiled-warm: {result['compiled']}/{result['jobs']} shape classes compiled on {result['workers']} "
          f"processes in {result['wall_s']} s; {result['skipped']} skipped, {result['failed']} failed; "
          f"cache {result['cache_dir']}")
    for r in result["records"]:
        if r["status"] == "failed":
            print(f"  {r['job']}: {r['error']}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
