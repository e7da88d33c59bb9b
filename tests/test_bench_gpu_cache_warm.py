"""benchmarks/gpu_cache_warm.py, run by gpu.sh beside the CUDA tests: its worker processes
make the `compiled` calls gpu.py's correctness step will make, and a later process making them
loads each shape class from inductor's on-disk cache instead of compiling it (CPU smoke:
inductor's C++, the same cache; counted by inductor's own fxgraph_cache_hit / _miss). The job
list covers every `compiled` correctness row and the ops step's compiled shapes."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]

# What gpu.py's correctness step does for the two smoke cases with impl "compiled", in a fresh
# process: prints inductor's FX graph cache counters after.
CHECKS = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from torch._dynamo.utils import counters
from benchmarks import gpu_checks
from benchmarks.gpu_cache_warm import SMOKE_CASES
for i, name in enumerate(SMOKE_CASES):
    case = next(c for c in gpu_checks.SMOKE_CASES if c.name == name)
    assert gpu_checks.check(case, torch.float32, "compiled", "cpu", seed=i + 3)["passed"], name
print(json.dumps({k: counters["inductor"][f"fxgraph_cache_{k}"] for k in ("hit", "miss")}))
'''


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "TORCHINDUCTOR_CACHE_DIR": str(cache)}


def _checks(cache: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECKS, str(REPO)], env=_env(cache), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_checks_load_what_the_workers_compiled(tmp_path):
    from models.depthwise import auto
    if not auto._cxx_available():
        pytest.skip("inductor on CPU needs a C++ compiler")
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_cache_warm.py"), "--smoke",
                           "--workers", "2", "--out", str(tmp_path)], cwd=REPO, env=_env(cache),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "cache-warm.json").read_text())
    tc = result["torch_compile"]
    assert (tc["jobs"], tc["compiled"], tc["failed"], tc["workers"]) == (2, 2, 0, 2)
    assert tc["cache_dir"] == str(cache) and "torch.compile 2/2 shape classes" in proc.stdout
    assert result["triton"]["jobs"] == 0                                 # the smoke compiles no Triton kernel
    assert _checks(cache) == {"hit": 2, "miss": 0}
    assert _checks(tmp_path / "empty") == {"hit": 0, "miss": 2}        # no warm-up: both compiled here


def test_jobs_are_every_compiled_correctness_row_then_the_ops_steps_compiled_shapes():
    sys.path.insert(0, str(REPO))
    from benchmarks import gpu_checks, ops
    from benchmarks.gpu_cache_warm import compiled_jobs
    from benchmarks.gpu_steps import _ops_impls
    got = compiled_jobs(smoke=False)
    checks = [j for j in got if j[0] == "check"]
    assert got[:len(checks)] == checks and len(checks) == len(gpu_checks.CASES) * len(gpu_checks.DTYPES)
    assert {(j[1], j[2]) for j in checks} == {(c.name, d) for c in gpu_checks.CASES for d in gpu_checks.DTYPES}
    run = SimpleNamespace(cfg={"ops_impls": list(ops.IMPLS), "ops_per_group": None}, device="cuda")
    timed = [s.name for s in ops.SUITE if "compiled" in _ops_impls(run, s, "float32")]
    assert [j[1] for j in got[len(checks):]] == timed and timed          # gpu_steps' own rule
    assert all("compiled" not in _ops_impls(run, s, "bfloat16") for s in ops.SUITE)


def test_gpu_sh_runs_it_beside_the_tests_and_waits_before_gpu_py():
    sh = (REPO / "benchmarks" / "gpu.sh").read_text()
    start, tests, wait, bench = (sh.index(s) for s in ("benchmarks/gpu_cache_warm.py --budget-s",
                                                       "tests/test_triton_launch_gpu.py 2>&1", 'wait "$warm_pid"',
                                                       'benchmarks/gpu.py --out "$out"'))
    assert start < tests < wait < bench and "&\nwarm_pid=$!" in sh


def test_no_cuda_is_a_usage_error(tmp_path):
    env = {**_env(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_cache_warm.py"), "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs CUDA" in proc.stderr


def test_a_triton_part_that_cannot_record_its_jobs_says_so_and_leaves_the_rest(monkeypatch):
    """Then gpu.py's prewarm step compiles everything as before; the warm-up's summary says why."""
    import time

    sys.path.insert(0, str(REPO))
    from benchmarks import gpu_cache_warm, gpu_config, gpu_prewarm
    monkeypatch.setattr(gpu_prewarm, "available", lambda: True)

    def broken(device, smoke):
        raise RuntimeError("no models here")
    monkeypatch.setattr(gpu_config, "settings", broken)
    got = gpu_cache_warm._triton_worker("cpu", time.time() + 5, 1)
    assert got["jobs"] == 0 and got["failed"] == 1 and "no models here" in got["note"]
