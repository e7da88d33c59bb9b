"""benchmarks/gpu_prewarm.py: the fused launches of gpu.py's steps are recorded, deduplicated
and compiled up front on a thread pool.

Recording and compiling need real Triton kernels (not the interpreter's), so they run in a
subprocess with TRITON_INTERPRET unset; there the compile is Triton's own pipeline for sm_90
(no GPU) instead of the JIT warm-up a GPU run uses. The JIT warm-up's arguments are checked
here against a fake JITFunction.warmup.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: records a slice of the real steps' calls on CPU tensors and
# compiles every job for sm_90 on 2 threads; prints one JSON line.
SCRIPT = textwrap.dedent("""
    import json, math, sys, time
    sys.path.insert(0, {repo!r})
    import torch
    from models.depthwise import fused
    fused.interpreting = lambda: True      # let CPU tensors through fused's device check (recording only)
    from benchmarks import gpu_checks, gpu_prewarm, ops, triton_aot
    from triton.runtime.jit import MockTensor

    cases = [c for c in gpu_checks.CASES if c.name in ("conv1d-causal", "conv1d-same-evenK", "conv2d-nhwc-s1",
                                                       "decode-step", "short-conv-state-mask")]
    shapes = [s for s in ops.SUITE if s.name in ("seed-c2048", "sweep-c256", "sweep-c512",
                                                "decode-16x2048", "mbv2-b1-c384@14-cl")]
    jobs = gpu_prewarm.record_jobs("cpu", cases, shapes)
    by_launch = {{}}
    for j in jobs:
        by_launch.setdefault(id(j.launch), []).append(j.index)
    n_configs = {{j.launch.name: len(j.launch.kernel.configs) if isinstance(j.launch.kernel, triton_aot.Autotuner)
                 else 1 for j in jobs}}
    tensors_kept = sum(isinstance(a, torch.Tensor) for j in jobs for a in j.launch.args)
    mocks = sum(isinstance(a, MockTensor) for j in jobs for a in j.launch.args)
    compile_fn = lambda job: triton_aot.compile_variant(job.launch, triton_aot.variants(job.launch)[job.index])
    done = gpu_prewarm.prewarm(jobs, math.inf, workers=2, compile_fn=compile_fn)
    late = gpu_prewarm.prewarm(jobs, time.perf_counter() - 1, compile_fn=compile_fn)
    bf16_jobs = gpu_prewarm.record_jobs("cpu", [], shapes, ops_dtypes=[torch.bfloat16])
    bf16_dtypes = sorted({{str(a.dtype) for j in bf16_jobs for a in j.launch.args if isinstance(a, MockTensor)}})
    print(json.dumps(dict(bf16_dtypes=bf16_dtypes, n_bf16=len(bf16_jobs), labels=[j.label for j in jobs], names=sorted({{j.launch.name for j in jobs}}),
                          indices=sorted(map(sorted, by_launch.values())), n_configs=n_configs,
                          tensors_kept=tensors_kept, mocks=mocks, done=done, late=late)))
""")


@pytest.fixture(scope="module")
def recorded():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_kernel_of_the_steps_is_recorded_once_per_variant(recorded):
    assert recorded["names"] == ["_dw_conv1d_kernel", "_dw_conv2d_nhwc_strip_tuned", "_dw_decode_kernel",
                                 "_short_conv_kernel"]          # the steps' NHWC layers are 3x3: strips
    assert len(set(recorded["labels"])) < len(recorded["labels"])   # a config label recurs across variants
    # An autotuned launch fans out to one job per config (0..7); fixed launches to one.
    for indices in recorded["indices"]:
        assert indices == list(range(len(indices)))
    assert recorded["n_configs"]["_dw_conv1d_kernel"] == 11 and recorded["n_configs"]["_dw_decode_kernel"] == 1
    # 12 conv1d calls: conv1d-causal and conv1d-same-evenK x 3 dtypes, and (1, C, 21) for C = 2048,
    # 256, 512 x 2 dtypes. The three Cs are one specialisation (C only enters as a multiple of
    # 16), so 6 + 2 variants x 6 configs = 48 jobs, not 72: these layers are small, so the
    # autotuner prunes the kernel's five big-layer configs (triton_autotune.big_layer_configs), and
    # prewarm compiles only what the autotuner will time.
    conv1d = [x for x in recorded["labels"] if x.startswith("_dw_conv1d_kernel")]
    assert len(conv1d) == 8 * 6


def test_jobs_hold_no_device_memory(recorded):
    assert recorded["tensors_kept"] == 0 and recorded["mocks"] > 0


def test_every_recorded_variant_compiles_and_a_passed_deadline_skips_all(recorded):
    done, late = recorded["done"], recorded["late"]
    assert done["failed"] == 0, done["errors"]
    assert done["compiled"] == done["jobs"] == len(recorded["labels"]) and done["workers"] == 2
    assert late["skipped"] == late["jobs"] and late["compiled"] == 0


def test_prewarm_counts_failures_and_never_raises():
    from benchmarks import gpu_prewarm
    jobs = [gpu_prewarm.Job(None, i, f"k{i}") for i in range(5)]

    def compile_fn(job):
        if job.index % 2:
            raise RuntimeError("no")
    res = gpu_prewarm.prewarm(jobs, time.perf_counter() + 60, workers=3, compile_fn=compile_fn)
    assert (res["compiled"], res["failed"], res["skipped"], res["jobs"]) == (3, 2, 0, 5)
    assert sorted(res["errors"]) == ["k1: RuntimeError: no", "k3: RuntimeError: no"]


def test_prewarm_returns_by_its_deadline_plus_the_straggler_wait(monkeypatch):
    """A compile that hangs does not hold the run: prewarm returns STRAGGLER_S after the
    deadline and counts it unfinished."""
    import threading

    from benchmarks import gpu_prewarm
    monkeypatch.setattr(gpu_prewarm, "STRAGGLER_S", 0.2)
    release = threading.Event()
    launch = SimpleNamespace(fn=object())          # one kernel: job 0 runs first, alone
    jobs = [gpu_prewarm.Job(launch, i, f"k{i}") for i in range(4)]

    def compile_fn(job):
        if job.index == 3:
            release.wait(30)                      # "hangs" until the test lets it go
    t0 = time.perf_counter()
    try:
        res = gpu_prewarm.prewarm(jobs, time.perf_counter() + 0.3, workers=2, compile_fn=compile_fn)
    finally:
        release.set()
    assert time.perf_counter() - t0 < 5
    assert (res["compiled"], res["unfinished"]) == (3, 1)


def test_jit_warmup_passes_the_launch_and_the_config_as_a_launch_would(monkeypatch):
    """Autotuner.run launches fn.run(*args, **kwargs, **config.all_kwargs()); the warm-up must
    compile exactly that (same kwargs: same JIT cache key), per config index."""
    import triton
    from triton.runtime.jit import JITFunction

    from benchmarks import gpu_prewarm, triton_aot
    calls = []
    monkeypatch.setattr(JITFunction, "warmup", lambda self, *a, grid, **kw: calls.append((self, a, kw)))

    def body(x_ptr, n, BLOCK: "tl.constexpr"):     # noqa: F821 - never compiled here
        pass
    fn = JITFunction(body)
    configs = [triton.Config({"BLOCK": 64}, num_warps=2), triton.Config({"BLOCK": 128}, num_warps=8, num_stages=2)]
    tuned = triton.autotune(configs=configs, key=["n"])(fn)
    launch = triton_aot.Launch(tuned, ("x", 7), {"EXTRA": 1}, "body")
    gpu_prewarm.jit_warmup(gpu_prewarm.Job(launch, 1, "body cfg1"))
    gpu_prewarm.jit_warmup(gpu_prewarm.Job(triton_aot.Launch(fn, ("y", 3), {"num_warps": 4}, "body"), 0, "fixed"))
    (f1, a1, kw1), (f2, a2, kw2) = calls
    assert f1 is fn and a1 == ("x", 7) and kw1 == {"EXTRA": 1, **configs[1].all_kwargs()}
    assert kw1["BLOCK"] == 128 and kw1["num_warps"] == 8 and kw1["num_stages"] == 2
    assert f2 is fn and a2 == ("y", 3) and kw2 == {"num_warps": 4}


def test_only_the_selected_steps_dtypes_are_recorded(recorded):
    assert recorded["bf16_dtypes"] == ["torch.bfloat16"] and recorded["n_bf16"] > 0


LAYOUTS_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import torch
    from models.depthwise import fused
    fused.interpreting = lambda: True      # let CPU tensors through fused's device check (recording only)
    from benchmarks import gpu_layouts, gpu_prewarm, ops
    shape = next(s for s in ops.SUITE if s.name == "mbv2-b8-c144@56-cl")
    calls = gpu_layouts.calls("cpu", (torch.bfloat16,), (shape,), (("block", (1, 64, 256), 3),))
    jobs = gpu_prewarm.record_jobs("cpu", [], [], extra_calls=(call for _, call in calls))
    launches = {{}}
    for j in jobs:
        launches.setdefault(j.launch.name, {{}})[id(j.launch)] = j.launch
    # the weight's channel stride as launched (by name: positions move when a kernel gains an argument)
    sw_c = {{name: sorted(dict(zip(l.fn.arg_names, l.args))["sw_c"] for l in ls.values())
            for name, ls in launches.items()}}
    print(json.dumps(dict(jobs=len(jobs), sw_c=sw_c)))
""")


def test_layouts_step_prewarms_both_weight_layouts():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", LAYOUTS_SCRIPT.format(repo=str(REPO))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # tap-major (channel stride 1) and as stored (KH*KW = 9; K = 3), each a variant of its own:
    # the NHWC strip kernel's 9 1-row and 6 tall configs each (b8 c144@56: 144 x 4**7 outputs at
    # stride 1, over tall_strip_rows' 2**20), the short-conv block's one fixed config.
    assert got["sw_c"] == {"_dw_conv2d_nhwc_strip_tuned": [1, 9], "_short_conv_kernel": [1, 3]}
    assert got["jobs"] == 2 * (9 + 6) + 2 * 1


STEP_JOBS_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    import torch
    from models.depthwise import fused
    fused.interpreting = lambda: True      # let CPU tensors through fused's device check (recording only)
    from benchmarks import gpu_checks, gpu_config, gpu_layouts, gpu_prewarm
    cfg = gpu_config.settings("cpu", True)
    labels = lambda jobs: [j.label for j in jobs]
    every = gpu_prewarm.step_jobs("cpu", True, gpu_config.STEPS, cfg, None)
    layouts = gpu_layouts.calls("cpu", cfg["layouts_dtypes"], *cfg["layouts"])
    direct = gpu_prewarm.record_jobs("cpu", gpu_checks.SMOKE_CASES, cfg["ops_shapes"], cfg["models_cases"], None,
                                     [torch.float32, torch.bfloat16], extra_calls=(call for _, call in layouts))
    ops_only = gpu_prewarm.step_jobs("cpu", True, ("prewarm", "ops-bfloat16"), cfg, None)
    direct_ops = gpu_prewarm.record_jobs("cpu", (), cfg["ops_shapes"], cfg["models_cases"], None, [torch.bfloat16])
    print(json.dumps(dict(every=labels(every) == labels(direct), n=len(every),
                          ops=labels(ops_only) == labels(direct_ops), n_ops=len(ops_only))))
""")


def test_step_jobs_records_what_the_selected_steps_launch():
    """gpu_prewarm.step_jobs (the prewarm step's and gpu_cache_warm.py's job list): every step's
    launches for a full run, the selected steps' only for a gap-filling one."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", STEP_JOBS_SCRIPT.format(repo=str(REPO))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["every"] and got["ops"] and got["n"] > got["n_ops"] > 0, got
