"""Settings, budgets and the environment record for benchmarks/gpu.py.

Budgets (seconds per step, CUDA): measured work stops being *started* at a step's deadline,
and what was not started is listed as skipped; TOTAL_CUDA_S caps all steps together (see
Budget.deadline). Where the time goes on CUDA: Triton autotunes each fused kernel once per
(channels, taps, stride, dilation, layout) key and dtype (6-8 configs timed: ~27 keys in
correctness, ~28 per ops dtype; compiled beforehand by the prewarm step), and `compiled` runs one
torch.compile per shape class. Ops shapes run in _priority order so a cut drops the
MobileNetV2 NCHW tail first, never the seed, LFM2 or decode shapes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import torch

from benchmarks import gpu_layouts, ops, timing
from benchmarks import models as bench_models
from models.allocator import keep_freed_memory

_REPO = Path(__file__).resolve().parents[1]

STEPS = ("env", "prewarm", "correctness", "copy", "ops-float32", "ops-bfloat16", "models", "decode", "layouts")
# prewarm compiles the ~520 kernel variants up front on every core (gpu_prewarm.py), so the
# timed steps' budgets no longer carry ~0.4 s of one-core compile per variant.
# The first H200 run (benchmarks/results/h200-2026-12-04) spent 36 s of its 45 s prewarm, and ran
# every other step to its budget: the ops steps now also graph-time each impl (device_us). The
# second (h200-2026-12-04-2) cut prewarm (236 of 584 variants), correctness (15 compiled fp16
# checks), the ops steps (26 + 46 shapes) and decode (lfm2-350m at batch 16, which issue 6
# needs), with ~2.9 s per ops shape, most of it per_group's (50-155 ms a call, thousands of
# launches under the profiler): per_group is now timed on PER_GROUP_SHAPES_CUDA only, and the
# budgets moved from the ops steps to prewarm, correctness and decode.
BUDGETS_CUDA = {"env": 5, "prewarm": 55, "correctness": 80, "copy": 5, "ops-float32": 75, "ops-bfloat16": 60,
                "models": 35, "decode": 80, "layouts": 5}        # seconds; sum 400
# On CUDA, per_group (the "before") is timed on these ops shapes only: the seed (issue 6's
# per_group / fused >= 1000x) and one LFM2 prompt, decode step and MobileNetV2 layer for the
# before/after story; elsewhere it is ~1000-5000x slower than the rest and costs most of a shape's time.
PER_GROUP_SHAPES_CUDA = ("seed-c2048", "lfm2-350m-prefill-1x128", "decode-16x2048", "mbv2-b1-c32@112-cl")
NOMINAL_CEILING_GBPS = 4256.0   # the H200's measured copy ceiling (h200-2026-12-04-2): orders shapes
TOTAL_CUDA_S = 400          # all steps; gpu.sh's timeout (440 s, after <= 145 s of CUDA tests) is the hard stop
# compiled timed on CUDA (float32) only at >= 128 MiB moved (2 suite shapes): it never won there
# (h200-2026-12-04: 106-159 us against fused's 73-122 on the 13 shapes >= 32 MiB), and each shape
# class costs a torch.compile out of the ops step's budget
COMPILED_MIN_BYTES = 128 << 20
SMOKE_SHAPES = (next(s for s in ops.SUITE if s.name == "sweep-c64"),
                ops.Shape("smoke-conv2d-1x8@9", "conv2d", (1, 8, 9, 9), (3, 3), padding=1),
                ops.Shape("smoke-conv2d-1x8@9-cl", "conv2d", (1, 8, 9, 9), (3, 3), padding=1, channels_last=True),
                ops.Shape("smoke-decode-2x64", "decode", (2, 64), 3))
SMOKE_CASES = (bench_models.Case("lfm2", "decode", 1, 8), bench_models.Case("mobilenet_v2", "forward", 1, 32))
SMOKE_LAYOUTS = (SMOKE_SHAPES[2],), (("smoke-block-1x8x16", (1, 8, 16), 3),)   # (conv2d shapes, short-conv cases)


def run_tag(device: str, smoke: bool, gpu_name: str) -> str:
    """File tag: smoke; h200 on an H200; else the device type (cpu-full: never the committed cpu)."""
    if smoke:
        return "smoke"
    if device == "cuda":
        return "h200" if "H200" in gpu_name.upper() else "cuda"
    return "cpu-full"


def _priority(s: ops.Shape) -> int:
    """CUDA ops order: what the acceptance checks need most first (a budget cuts the tail): the
    seed, the memory-bound shapes (the copy-ceiling check fails on any one unmeasured), the LFM2
    family, other conv1d, channels_last conv2d, NCHW conv2d."""
    from benchmarks import gpu_report
    if s is ops.SEED:
        return 0
    if gpu_report.is_membound(ops.shape_dict(s), "float32", NOMINAL_CEILING_GBPS):
        return 1
    if s.op == "decode" or s.name.startswith(("lfm2", "lfm3", "shortconv")):
        return 2
    return 3 if s.op == "conv1d" else 4 if s.channels_last else 5


def settings(device: str, smoke: bool) -> dict:
    """Sizes and repeats per mode. The full settings are sized for an H200 (a non-smoke CPU run
    uses them too, slowly); the smoke ones for a 2-core CPU under the Triton interpreter."""
    no_compiled = [i for i in ops.IMPLS if i != "compiled"]
    if smoke:
        return dict(
            budgets={s: 120 for s in STEPS}, total_s=900,       # never binding: the test wants it all
            ops_shapes=SMOKE_SHAPES, ops_impls=no_compiled, check_impls=no_compiled, ops_per_group=None,
            ops_budget_s=0.03, ops_reps=(2, 4),                 # timing.py's minimum samples
            models_cases=SMOKE_CASES, models_impls=["per_group", "native", "auto"],
            models_budget_s=0.03, models_reps=(2, 3), share_runs=1,
            copy_bytes=16 << 20, copy_reps=5,
            presets=("lfm2-demo",), batches=(1,), prompt=4, new_tokens=3, decode_max_s=5.0,
            decode_dtype=torch.float32,
            layouts=SMOKE_LAYOUTS, layouts_dtypes=(torch.float32,), layouts_budget_s=0.03, layouts_reps=(2, 4))
    return dict(
        budgets=BUDGETS_CUDA, total_s=TOTAL_CUDA_S,
        ops_shapes=tuple(sorted(ops.SUITE, key=_priority)),     # the whole suite, most needed first
        ops_impls=list(ops.IMPLS), check_impls=list(ops.IMPLS), ops_per_group=PER_GROUP_SHAPES_CUDA,
        ops_budget_s=0.25, ops_reps=(5, 200),                   # per shape, all impls interleaved
        models_cases=bench_models.CASES, models_impls=no_compiled,   # compiled: ~15 classes per model
        models_budget_s=0.3, models_reps=(3, 30), share_runs=2,
        copy_bytes=1 << 30, copy_reps=30,                       # 2 x 1 GiB: far beyond any cache
        presets=("lfm2-demo", "lfm2-350m"), batches=(1, 16), prompt=32, new_tokens=64,
        decode_max_s=5.0,                                       # per_group at ~150 ms/token: ~30 tokens
        decode_dtype=torch.bfloat16 if device == "cuda" else torch.float32,
        layouts=(gpu_layouts.CONV2D, gpu_layouts.SHORT_CONV), layouts_dtypes=(torch.bfloat16,),   # as served
        layouts_budget_s=0.15, layouts_reps=(5, 100))


def nvidia_smi() -> dict | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    name, _, driver = (out.splitlines() or [""])[0].partition(",")
    return {"raw": out, "name": name.strip(), "driver_version": driver.strip()}


def environment(device: str, argv: list[str]) -> dict:
    env = timing.environment(device)
    env["malloc_keep_freed"] = keep_freed_memory()          # as ops.py / models.py run
    smi = nvidia_smi()
    env.update(nvidia_smi=smi, gpu_driver=smi["driver_version"] if smi else None,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
               triton_interpret=os.environ.get("TRITON_INTERPRET"), argv=timing.recorded_argv(argv))
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu_capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1))
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


class Budget:
    """Deadlines for the selected steps, scaled by `scale` (--budget-scale)."""

    def __init__(self, budgets: dict, total_s: float, steps: list[str], scale: float = 1.0):
        self.budgets = {s: budgets[s] * scale for s in steps}
        self.total_s, self.steps, self.t0 = total_s * scale, list(steps), time.perf_counter()

    def deadline(self, step: str) -> tuple[float, float]:
        """(absolute time.perf_counter deadline, seconds granted): the step's budget plus what
        earlier steps left unused (a prewarm that found Triton's disk cache full hands its
        seconds on to the ops steps, which stop when their shapes are done), shrunk when earlier
        steps overran so that later steps keep half of theirs, but never below a quarter of its own."""
        i, elapsed = self.steps.index(step), time.perf_counter() - self.t0
        later = sum(self.budgets[s] for s in self.steps[i + 1:])
        unused = max(0.0, sum(self.budgets[s] for s in self.steps[:i]) - elapsed)
        left = self.total_s - elapsed - 0.5 * later
        granted = min(self.budgets[step] + unused, max(left, 0.25 * self.budgets[step]))
        return time.perf_counter() + granted, round(granted, 1)
