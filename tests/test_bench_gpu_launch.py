"""benchmarks/gpu_launch.py, the short device call that splits a fused call's time into host
launch path and kernel: its CPU smoke (Triton's interpreter, no graphs) runs end to end and
writes one row per shape and dtype with every wall column; the CUDA columns stay empty here."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_launch.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_smoke_writes_a_row_per_shape_and_dtype_with_both_launch_paths(tmp_path):
    proc = _run("--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "launch-smoke.json").read_text())
    rows = result["rows"]
    assert [(r["shape"], r["dtype"]) for r in rows] == [(s, d) for d in ("float32", "bfloat16")
                                                         for s in ("smoke-conv1d", "smoke-conv2d-cl")]
    for r in rows:
        assert "error" not in r, r
        walls = ("native", "fused_direct", "fused_direct_tensors", "fused_direct_pycall", "fused_jit")
        assert all(r[f"{k}_wall_us"] > 0 for k in walls), r
        assert r["native_device_us"] is None and r["fused_direct_device_us"] is None   # no CUDA graphs on CPU
        assert r["min_bytes"] > 0
    # the smoke's conv1d row (L 12: whole 4-wide strips) and 3x3 NHWC layer both take strip kernels
    assert {"_dw_conv1d_strip_kernel", "_dw_conv2d_nhwc_strip_kernel"} <= {p["kernel"] for p in result["autotune_picks"]}
    # the host split of the smoke's conv1d row: no Plans under the interpreter, so its public and
    # past-dispatch parts only (tests/test_bench_gpu_host_split.py times every part)
    (split,) = result["host_split"]
    assert split["shape"] == "smoke-conv1d" and "error" not in split, split
    assert set(split["us"]) == {"public fused", "public native", "fused past dispatch", "native past dispatch"}
    md = (tmp_path / "launch-smoke.md").read_text()
    assert "Host split" in md and "| smoke-conv1d | float32 |" in md
    assert md.count("| smoke-") == 4 + 1                                  # the rows, the host split
    assert all(column in md for column in ("fused JIT wall", "tensor args wall", "Python launcher call wall"))
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| smoke-conv2d-cl | bfloat16")   # the table last


def test_bad_budget_and_no_cuda_are_usage_errors(tmp_path):
    proc = _run("--smoke", "--budget-s", "0", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "--budget-s" in proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_launch.py"), "--out", str(tmp_path)],
                          cwd=REPO, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "needs CUDA" in proc.stderr
