"""Compile every fused-kernel variant benchmarks/gpu.py will launch, before anything is timed.

Why: Triton compiles a kernel variant (argument specialisation x autotune config) the first
time it is launched, about 0.4 s each on one core, one after another, inside the timed
steps' budgets. The correctness cases and the ops suite in float32 and bfloat16 alone make
~450 distinct (specialisation, autotune config) pairs (~520 with the layouts and models
steps): ~3 minutes on one core, 40% of the
run's 450 s of steps. Here they are compiled up front on every core:

1. record: each step's fused calls run with recorders in place of the kernels
   (triton_aot.recording): the launchers work out their real arguments, nothing launches;
2. dedupe by Triton's own specialisation of those arguments (what keys its JIT cache);
3. compile each (variant, config) from a thread pool through the JIT's own path,
   `fn.warmup(*args, grid=..., **kwargs, **config.all_kwargs())` (what Autotuner.warmup
   does per config), so later launches and autotuning find them in the JIT's in-process
   cache. Triton's compile releases the GIL (2 threads: 1.8x on 2 cores, measured).

    jobs = record_jobs(device, cases, ops_shapes, models_cases, models)   # [Job], deduplicated
    result = prewarm(jobs, deadline)            # {"compiled", "skipped", "failed", "errors", ...}
"""
from __future__ import annotations

import concurrent.futures
import math
import os
import time
from dataclasses import dataclass

import torch

from benchmarks import gpu_checks, ops
from benchmarks import models as bench_models
from models.depthwise import fused

KERNEL_MODULES = ("triton_conv1d", "triton_conv2d", "triton_decode", "triton_short_conv")
OPS_DTYPES = (torch.float32, torch.bfloat16)          # gpu.py's ops-float32 / ops-bfloat16 steps
STRAGGLER_S = 20.0     # how long past its deadline prewarm waits for compiles already running


@dataclass(frozen=True)
class Job:
    """One compile: a recorded launch (tensors slimmed) and one of its variants."""
    launch: object                 # triton_aot.Launch
    index: int                     # into triton_aot.variants(launch) / the Autotuner's configs
    label: str                     # "<kernel> <config>"


def _calls(cases, ops_shapes, models_cases, device: str, models: dict | None, ops_dtypes, extra_calls=()):
    """Zero-arg calls making each fused call the steps will make, in their order."""
    for case in cases:
        for dtype in gpu_checks.DTYPES.values():
            inp = gpu_checks.make_inputs(case, dtype, device)
            yield lambda case=case, inp=inp: gpu_checks.run_impl(case, inp, "fused")
    for dtype in ops_dtypes:
        for shape in ops_shapes:
            yield lambda shape=shape, dtype=dtype: ops.make_call(shape, "fused", dtype, device)()
    for case in models_cases if models else ():
        yield bench_models.with_impl(bench_models.make_call(case, models[case.model], device), "fused")
    yield from extra_calls


def _slim(launch):
    """The launch with each 16-byte-aligned tensor replaced by Triton's MockTensor of its dtype
    (what `warmup` takes; the same specialisation), so jobs hold no device memory."""
    from triton.runtime.jit import MockTensor

    from benchmarks import triton_aot
    args = tuple(MockTensor(a.dtype) if isinstance(a, torch.Tensor) and a.data_ptr() % 16 == 0 else a
                 for a in launch.args)
    return triton_aot.Launch(launch.kernel, args, launch.kwargs, launch.name)


def record_jobs(device: str, cases, ops_shapes, models_cases=(), models: dict | None = None,
                ops_dtypes=OPS_DTYPES, extra_calls=()) -> list[Job]:
    """Every distinct (variant, config) that the correctness `cases` (x 3 dtypes), the ops
    shapes (x ops_dtypes), the model cases and `extra_calls` (zero-arg calls of fused ops,
    such as the layouts step's) launch through `fused`, first use first."""
    import importlib

    from benchmarks import triton_aot                 # imports triton: only when there is work
    modules = [importlib.import_module(f"models.depthwise.{m}") for m in KERNEL_MODULES]
    jobs, seen = [], set()
    with torch.inference_mode(), triton_aot.recording(*modules) as launches:
        for call in _calls(cases, ops_shapes, models_cases, device, models, ops_dtypes, extra_calls):
            call()
            for launch in map(_slim, launches):
                kept = triton_aot.kept_configs(launch)     # as the autotuner prunes them for this launch
                for i, v in enumerate(triton_aot.variants(launch)):
                    if kept is not None and i not in kept:
                        continue
                    key = (launch.name, v.label, tuple(v.signature.items()),
                           repr(sorted(v.constexprs.items())), repr(sorted(v.attrs.items())))
                    if key not in seen:
                        seen.add(key)
                        jobs.append(Job(launch, i, f"{launch.name} {v.label}"))
            launches.clear()                        # the recorded arguments hold device memory
    return jobs


def step_jobs(device: str, smoke: bool, steps, cfg: dict, models: dict | None) -> list[Job]:
    """record_jobs for what gpu.py's selected `steps` launch, with its settings `cfg`
    (gpu_config.settings) and the models step's built modules (None without that step)."""
    from benchmarks import gpu_layouts
    cases = (gpu_checks.SMOKE_CASES if smoke else gpu_checks.CASES) if "correctness" in steps else ()
    ops_dtypes = [ops.DTYPES[s.removeprefix("ops-")] for s in steps if s.startswith("ops-")]
    layouts = gpu_layouts.calls(device, cfg["layouts_dtypes"], *cfg["layouts"]) if "layouts" in steps else ()
    return record_jobs(device, cases, cfg["ops_shapes"], cfg["models_cases"], models, ops_dtypes,
                       extra_calls=(call for _, call in layouts))


def jit_warmup(job: Job) -> None:
    """Compile job's variant through Triton's JIT (no launch): its in-process cache keeps it."""
    from triton.runtime.autotuner import Autotuner
    kernel, launch = job.launch.kernel, job.launch
    if isinstance(kernel, Autotuner):
        kernel.fn.warmup(*launch.args, grid=(1,), **launch.kwargs, **kernel.configs[job.index].all_kwargs())
    else:
        kernel.warmup(*launch.args, grid=(1,), **launch.kwargs)


def prewarm(jobs: list[Job], deadline: float, workers: int | None = None, compile_fn=jit_warmup) -> dict:
    """Run compile_fn(job) for every job on `workers` threads (default: every core); jobs not
    started by `deadline` are skipped, and the call returns by deadline + STRAGGLER_S at the
    latest. Failures are counted, never raised: a variant that fails here fails again,
    visibly, in the step that launches it."""
    workers = workers or os.cpu_count() or 1
    t0, errors = time.perf_counter(), []

    def one(job: Job) -> str:
        if time.perf_counter() > deadline:
            return "skipped"
        try:
            compile_fn(job)
            return "compiled"
        except Exception as exc:                  # noqa: BLE001 - reported, the run goes on
            errors.append(f"{job.label}: {type(exc).__name__}: {exc}"[:300])
            return "failed"

    # The first job of each kernel runs alone: it sets up that JITFunction's per-device caches
    # (binder, cache key) once, so the pool's threads only look them up.
    firsts, kernels = [], set()
    for job in jobs:
        kernel = id(job.launch.fn) if job.launch is not None else id(job)
        if kernel not in kernels:
            kernels.add(kernel)
            firsts.append(job)
    outcomes = [one(job) for job in firsts]
    rest = [job for job in jobs if all(job is not f for f in firsts)]
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="dwserve-prewarm")
    futures = [pool.submit(one, job) for job in rest]
    # Bounded: a compile still running STRAGGLER_S after the deadline is left behind (counted
    # "unfinished"), so the run's later steps keep their time whatever happens here.
    wait_s = max(0.0, deadline - time.perf_counter()) + STRAGGLER_S
    done, _ = concurrent.futures.wait(futures, timeout=wait_s if math.isfinite(wait_s) else None)
    pool.shutdown(wait=False, cancel_futures=True)
    outcomes += [f.result() if f in done else "unfinished" for f in futures]
    return {"jobs": len(jobs), "workers": workers, "wall_s": round(time.perf_counter() - t0, 1),
            **{k: outcomes.count(k) for k in ("compiled", "skipped", "failed", "unfinished")},
            "errors": errors[:10]}


def available() -> bool:
    """Whether there is anything to compile: real Triton kernels, not the interpreter's."""
    return not fused.interpreting()
