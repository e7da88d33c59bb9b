"""benchmarks/gpu_nhwc.py, the short device call timing cuDNN, the per-pixel and the strip NHWC
kernels side by side: its CPU smoke (Triton's interpreter, no graphs) runs end to end, each fused
variant really launches its own kernel and matches cuDNN's output, and a row per shape and dtype
is written; the CUDA columns stay empty here."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_times_both_fused_kernels_beside_native(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_nhwc.py"), "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "nhwc-smoke.json").read_text())
    rows = result["rows"]
    assert [(r["shape"], r["dtype"]) for r in rows] == [(s, d) for d in ("float32", "bfloat16", "float16")
                                                         for s in ("smoke-s1-cl", "smoke-s2-cl")]
    for r in rows:
        assert "error" not in r, r
        assert all(r[f"{k}_wall_us"] > 0 for k in ("native", "fused_pixels", "fused_strips")), r
        assert all(r[f"{k}_device_us"] is None for k in ("native", "fused_pixels", "fused_strips"))   # no graphs on CPU
        tol = {"bfloat16": 1e-2, "float16": 2e-3}.get(r["dtype"], 1e-5)
        assert r["fused_pixels_max_rel_err"] <= tol and r["fused_strips_max_rel_err"] <= tol, r
    kernels = [p["kernel"] for p in result["autotune_picks"]]
    assert kernels.count("_dw_conv2d_nhwc_kernel") == 6 and kernels.count("_dw_conv2d_nhwc_strip_kernel") == 6
    md = (tmp_path / "nhwc-smoke.md").read_text()
    assert md.count("| smoke-") == 6 and "strips/native" in md


def test_bad_dtypes_are_a_usage_error(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_nhwc.py"), "--smoke", "--dtypes", "float8",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dtypes" in proc.stderr
