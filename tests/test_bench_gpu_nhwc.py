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
        impls = ("native", "fused_pixels", "fused_strips", "fused_strips_1row")   # the smoke times all four
        assert all(r[f"{k}_wall_us"] > 0 for k in impls), r
        assert all(r[f"{k}_device_us"] is None for k in impls)   # no graphs on CPU
        tol = {"bfloat16": 1e-2, "float16": 2e-3}.get(r["dtype"], 1e-5)
        assert all(r[f"{k}_max_rel_err"] <= tol for k in impls[1:]), r
    kernels = [p["kernel"] for p in result["autotune_picks"]]
    # per shape and dtype: the per-pixel kernel's tuner, and the strip kernel's two (with and without two-row strips)
    assert kernels.count("_dw_conv2d_nhwc_kernel") == 6 and kernels.count("_dw_conv2d_nhwc_strip_kernel") == 12
    md = (tmp_path / "nhwc-smoke.md").read_text()
    assert md.count("| smoke-") == 6 and "strips/native" in md and "strips/1-row" in md


def test_the_one_row_column_is_timed_on_the_big_layers_only():
    """Where the strip tuner tries two-row configs (triton_autotune.big_layer_configs): the three
    batch-32 MobileNetV2 layers of >= 4M outputs; elsewhere both columns would be one launch."""
    sys.path.insert(0, str(REPO))
    from benchmarks.gpu_nhwc import two_rows_tried
    from benchmarks.ops_suite import SUITE
    big = [s.name for s in SUITE if s.op == "conv2d" and s.channels_last and two_rows_tried(s)]
    assert big == ["mbv2-b32-c32@112-cl", "mbv2-b32-c96@112-s2-cl", "mbv2-b32-c144@56-cl"]


def test_bad_dtypes_are_a_usage_error(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_nhwc.py"), "--smoke", "--dtypes", "float8",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dtypes" in proc.stderr
