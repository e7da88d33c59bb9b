"""benchmarks/gpu_strips.py, the short device call timing cuDNN, the generic fused kernels and the
strip kernels side by side (NHWC, NCHW, (B, C, L) conv1d): its CPU smoke (Triton's interpreter, no
graphs) runs end to end, each fused variant really launches its own kernel and matches cuDNN's
output, and a row per shape and dtype is written; the CUDA columns stay empty here."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_times_the_generic_and_the_strip_kernels_beside_native(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_strips.py"), "--smoke", "--out", str(tmp_path),
                           "--budget-s", "3000"],   # every row: a busy 2-core CI box ran past the default 120 s
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "strips-smoke.json").read_text())
    rows = result["rows"]
    assert [(r["shape"], r["dtype"]) for r in rows] == [(s, d) for d in ("float32", "bfloat16", "float16")
                                                         for s in ("smoke-s1-cl", "smoke-s2-cl", "smoke-s1-nchw",
                                                                   "smoke-s2-nchw", "smoke-k4-ncl", "smoke-k7-ncl")]
    for r in rows:
        assert "error" not in r, r
        # the smoke times the 1-row strips on NHWC rows (TWO_ROW_STRIPS: NHWC only), the 4-wide ones on the
        # 2-byte NCHW / NCL rows whose strips are 8 wide (W_out 8, L 16; not W_out 4, L 12)
        nhwc = r["shape"].endswith("-cl")
        wide = r["dtype"] != "float32" and r["shape"] in ("smoke-s1-nchw", "smoke-k4-ncl")
        impls = (("native", "fused_generic", "fused_strips") + (("fused_strips_1row",) if nhwc else ())
                 + (("fused_strips_4wide",) if wide else ()))
        assert nhwc or "fused_strips_1row_wall_us" not in r
        assert wide or "fused_strips_4wide_wall_us" not in r
        assert all(r[f"{k}_wall_us"] > 0 for k in impls), r
        assert all(r[f"{k}_device_us"] is None for k in impls)   # no graphs on CPU
        tol = {"bfloat16": 1e-2, "float16": 2e-3}.get(r["dtype"], 1e-5)
        assert all(r[f"{k}_max_rel_err"] <= tol for k in impls[1:]), r
    kernels = [p["kernel"] for p in result["autotune_picks"]]
    # per NHWC shape and dtype: the per-pixel kernel's tuner, the strip kernel's two (with and without two-row
    # strips); per NCHW / NCL shape and dtype: the generic kernel's and the strip kernel's
    assert kernels.count("_dw_conv2d_nhwc_kernel") == 6 and kernels.count("_dw_conv2d_nhwc_strip_kernel") == 12
    # (the strip tuners key on VEC too: the 8-wide rows' 4-wide column tunes apart, 2 dtypes x 1 shape each)
    assert kernels.count("_dw_conv2d_nchw_kernel") == 6 and kernels.count("_dw_conv2d_nchw_strip_kernel") == 8
    assert kernels.count("_dw_conv1d_kernel") == 6 and kernels.count("_dw_conv1d_strip_kernel") == 8
    md = (tmp_path / "strips-smoke.md").read_text()
    assert md.count("| smoke-") == 18 and all(c in md for c in ("strips/native", "strips/generic", "strips/1-row",
                                                                  "strips/4-wide"))


def test_layouts_select_the_rows(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_strips.py"), "--smoke", "--dtypes", "float32",
                           "--layouts", "nchw", "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "strips-smoke.json").read_text())["rows"]
    assert [r["shape"] for r in rows] == ["smoke-s1-nchw", "smoke-s2-nchw"]
    sys.path.insert(0, str(REPO))
    from benchmarks.gpu_strips import suite_shapes
    assert len(suite_shapes(["nhwc"])) == 27 and len(suite_shapes(["nchw"])) == 18
    assert [s.channels_last for s in suite_shapes(["nhwc", "nchw"])] == [True] * 27 + [False] * 18
    ncl = suite_shapes(["ncl"])
    assert [s.name for s in ncl][-1] == "shortconv-long-1x4096x4096" and len(ncl) == 5
    assert all(s.op == "conv1d" and s.x[2] % 4 == 0 for s in ncl)      # the rows the conv1d strip kernel covers


def test_the_one_row_column_is_timed_on_the_big_layers_only():
    """Where the strip tuner tries tall (2- and 4-row) configs (triton_autotune.tall_strip_rows): the
    stride-1 MobileNetV2 layers of >= 2**20 outputs (C x 4**size class) and the stride-2 one of
    >= 4M; elsewhere both columns would be one launch."""
    sys.path.insert(0, str(REPO))
    from benchmarks.gpu_strips import two_rows_tried
    from benchmarks.ops_suite import SUITE
    big = [s.name for s in SUITE if s.op == "conv2d" and s.channels_last and two_rows_tried(s)]
    assert big == ["mbv2-b8-c32@112-cl", "mbv2-b8-c144@56-cl", "mbv2-b32-c32@112-cl", "mbv2-b32-c96@112-s2-cl",
                   "mbv2-b32-c144@56-cl", "mbv2-b32-c192@28-cl", "mbv2-b32-c384@14-cl", "mbv2-b32-c576@14-cl"]


def test_the_4_wide_column_is_timed_where_strips_are_8_wide():
    """bfloat16 / float16 NCHW and (B, C, L) rows of whole 8-vectors (the strip kernels' strip_width
    with WIDE_HALF on): MobileNetV2's 112 and 56 rows (not 28: W_out 28, nor 56 -> 28 at stride 2),
    every (B, C, L) conv1d row of the suite; never float32 or NHWC."""
    sys.path.insert(0, str(REPO))
    import torch
    from benchmarks.gpu_strips import suite_shapes, wide_tried
    shapes = suite_shapes(["nhwc", "nchw", "ncl"])
    wide = [s.name for s in shapes if wide_tried(s, torch.bfloat16)]
    assert wide == [s.name for s in shapes if wide_tried(s, torch.float16)]
    assert not any(wide_tried(s, torch.float32) for s in shapes)
    assert wide == ["mbv2-b1-c32@112", "mbv2-b1-c96@112-s2", "mbv2-b1-c144@56", "mbv2-b32-c32@112",
                    "mbv2-b32-c96@112-s2", "mbv2-b32-c144@56", "lfm2-350m-prefill-1x128", "lfm2-350m-prefill-8x512",
                    "lfm3-1.7b-prefill-1x128", "lfm3-1.7b-prefill-8x512", "shortconv-long-1x4096x4096"]


def test_bad_dtypes_are_a_usage_error(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_strips.py"), "--smoke", "--dtypes", "float8",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dtypes" in proc.stderr
