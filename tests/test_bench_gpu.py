"""benchmarks/gpu.py: the CPU smoke of the one-call GPU script.

The smoke runs the script as the device call does (a subprocess, `--smoke --device cpu`),
fused in Triton's interpreter (TRITON_INTERPRET=1 from conftest.py, inherited), and checks
what it wrote. Its checkers, fed wrong impls and synthetic CUDA records: tests/test_gpu_checkers.py.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import gpu_checks, gpu_report  # noqa: E402

ENV_KEYS = {"device", "device_name", "torch", "triton", "cuda", "gpu", "gpu_driver", "cudnn", "argv"}
BANDWIDTH_KEYS = {"min_bytes", "achieved_gbps", "copy_ceiling_gbps", "copy_fraction"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-smoke")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--device", "cpu",
                           "--out", str(out)], cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, proc.stdout, json.loads((out / "gpu-summary-smoke.json").read_text())


def test_smoke_writes_every_step_and_prints_the_table_last(smoke):
    out, stdout, summary = smoke
    assert {n: s["status"] for n, s in summary["steps"].items()} == {
        n: "ok" for n in ("env", "prewarm", "correctness", "copy", "ops-float32", "ops-bfloat16", "models", "decode",
                          "layouts")}
    names = {"correctness-smoke.json", "correctness-smoke.md", "copy-smoke.json", "ops-smoke.json", "ops-smoke.md",
             "ops-smoke.png", "ops-smoke-bfloat16.json", "models-smoke.json", "decode-smoke.json",
             "layouts-smoke.json", "layouts-smoke.md", "gpu-summary-smoke.json", "gpu-summary-smoke.md"}
    assert names <= {p.name for p in out.iterdir()} and names <= set(summary["files"])
    assert not list(out.glob("*-cpu.*"))                         # never the committed CPU results
    assert summary["exit_code"] == 0 and summary["smoke"] and summary["tag"] == "smoke"
    assert stdout.rstrip().splitlines()[-1].startswith("exit 0")   # the summary table comes last
    for name in ("correctness-smoke.json", "copy-smoke.json", "models-smoke.json", "decode-smoke.json",
                 "layouts-smoke.json", "gpu-summary-smoke.json"):
        assert ENV_KEYS <= set(json.loads((out / name).read_text())["environment"]), name


def test_the_run_records_every_autotune_pick(smoke):
    """autotune-<tag>.json: per fused kernel and key, the config the autotuner chose (under the
    interpreter each autotuner has one config, so the pick is that one)."""
    out, _, summary = smoke
    assert "autotune-smoke.json" in summary["files"]
    picks = json.loads((out / "autotune-smoke.json").read_text())["picks"]
    kernels = {p["kernel"] for p in picks}
    assert {"_dw_conv1d_kernel", "_dw_conv2d_nhwc_strip_kernel"} <= kernels, kernels   # 3x3 NHWC: strips
    for p in picks:
        assert p["key"] and all(isinstance(k, (int, float, bool, str, type(None))) for k in p["key"])
        assert any(name.startswith("BLOCK_") for name in p["config"]) and "num_warps" in p["config"], p


def test_results_name_no_path_of_the_machine_that_ran_them(smoke):
    """gpu.sh passes an absolute --out: the JSONs a session copies into benchmarks/results must
    not carry it (tests/test_benchmark_results.py refuses absolute paths in committed results)."""
    out, _, _ = smoke
    offenders = [p.name for p in [*out.glob("*.json"), *out.glob("*.md")] if str(out) in p.read_text()]
    assert not offenders, offenders
    argv = json.loads((out / "gpu-summary-smoke.json").read_text())["environment"]["argv"]
    assert argv == ["--smoke", "--device", "cpu"]


def test_layouts_ab_times_both_weight_layouts_on_every_case(smoke):
    out, stdout, summary = smoke
    rows = json.loads((out / "layouts-smoke.json").read_text())["rows"]
    assert [(r["case"], r["dtype"]) for r in rows] == [("smoke-conv2d-1x8@9-cl", "float32"),
                                                       ("smoke-block-1x8x16", "float32")]
    for r in rows:
        assert r["tap_major_us"] > 0 and r["channel_major_us"] > 0
        assert r["speedup"] == pytest.approx(r["channel_major_us"] / r["tap_major_us"], rel=1e-2)
        assert r["tap_major_gbps"] == pytest.approx(r["min_bytes"] / (r["tap_major_us"] * 1e3), rel=1e-2)
    assert summary["layouts"] == rows
    assert "| geometric mean | float32 |" in (out / "layouts-smoke.md").read_text()
    assert any(line.startswith("layouts | geometric mean") for line in stdout.splitlines())


def test_layouts_autotune_and_first_calls_happen_before_timing(monkeypatch):
    """The channel-major variant's autotune keys are new in the layouts step, so its first call
    tunes (~0.2 s): it must not be the warm-up's only call, which sized the samples from it
    (one call per sample, 3 samples, for a ~30 us kernel)."""
    from benchmarks import gpu_layouts, timing
    calls = {"n": 0}

    def fake_call():
        calls["n"] += 1

    monkeypatch.setattr(gpu_layouts, "cases", lambda *a, **k: iter([("fake", 1000, lambda: fake_call)]))
    seen, real = [], timing.time_interleaved

    def checking(fns, **kw):
        seen.append(calls["n"])
        return real(fns, **kw)

    monkeypatch.setattr(gpu_layouts.timing, "time_interleaved", checking)
    rows = gpu_layouts.run("cpu", (torch.float32,), float("inf"), [], [], budget_s=0.01, reps=(2, 4))
    assert len(rows) == 1 and seen and seen[0] >= 2          # both variants called before timing


def test_ops_records_keep_the_committed_format_plus_bandwidth(smoke):
    out, stdout, _ = smoke
    committed = json.loads((REPO / "benchmarks" / "results" / "ops-cpu.json").read_text())[0]
    for name in ("ops-smoke.json", "ops-smoke-bfloat16.json"):
        recs = json.loads((out / name).read_text())
        assert recs and all(set(committed) | BANDWIDTH_KEYS | ENV_KEYS <= set(r) for r in recs)
        for r in recs:
            assert r["error"] is None, r
            assert r["min_bytes"] == gpu_report.min_bytes(r) and r["achieved_gbps"] > 0 and r["copy_fraction"] > 0
            # where the shape's seconds went (the ops step's budget: the next run's log says it too)
            assert set(r["phase_s"]) == {"warm", "time", "device", "count"} and r["phase_s"]["time"] > 0, r
        assert {r["impl"] for r in recs} == {"per_group", "slice_sum", "fused", "native", "auto"}
    assert any(line.startswith("float32 ") and "(warm " in line and " count " in line for line in stdout.splitlines())


def test_correctness_table_covers_every_impl_and_dtype_it_claims(smoke):
    out, _, summary = smoke
    res = json.loads((out / "correctness-smoke.json").read_text())
    assert set(res["dtypes"]) == {"float32", "bfloat16", "float16"}
    assert {"per_group", "slice_sum", "fused", "native", "auto"} <= set(res["impls"])
    rows = {(r["impl"], r["dtype"], r["case"]): r for r in res["rows"]}
    claimed = {(i, d, c) for i in res["impls"] for d in res["dtypes"] for c in res["cases"]}
    assert set(rows) == claimed and len(res["rows"]) == len(claimed)
    assert all(r["passed"] and not r.get("skipped") for r in res["rows"]), res["failed"]
    assert res["skipped"] == 0 and res["passed"] == res["checked"] == len(claimed)
    assert {c.op for c in gpu_checks.CASES} == {"conv1d", "conv2d", "decode", "short_conv"}
    md = (out / "correctness-smoke.md").read_text()
    assert all(f"## {d}" in md for d in res["dtypes"]) and "FAIL" not in md
    assert summary["checks"][0]["status"] == "met"


def test_tags_and_budgets_never_touch_committed_results(tmp_path):
    from benchmarks import gpu, gpu_config
    assert gpu_config.run_tag("cuda", False, "NVIDIA H200") == "h200"
    assert gpu_config.run_tag("cuda", False, "NVIDIA A100") == "cuda"
    assert gpu_config.run_tag("cpu", False, "") == "cpu-full" and gpu_config.run_tag("cuda", True, "H200") == "smoke"
    fake = SimpleNamespace(out=tmp_path, files=[])
    with pytest.raises(RuntimeError, match="committed"):
        gpu.Run.path(fake, "ops-cpu.json")
    b = gpu_config.Budget(gpu_config.BUDGETS_CUDA, 0.0, ["ops-float32", "decode"])      # total spent
    assert b.deadline("ops-float32")[1] == pytest.approx(0.25 * gpu_config.BUDGETS_CUDA["ops-float32"], abs=0.06)   # rounded to 0.1 s
    # gpu.sh: the CUDA tests' timeout + gpu.py's (each + its kill grace) fit the device tool's 600 s
    # per call, and gpu.py's steps leave >= 40 s of its own timeout for start-up and the summary.
    # A second launch-test run (when the first fails) shrinks gpu.py's share: what is left of
    # GPU_SH_LIMIT_S when it starts, less 10 s, capped (test_gpu_sh_packing.py runs that path).
    sh = (REPO / "benchmarks" / "gpu.sh").read_text()
    tests = re.findall(r'timeout -k (\d+) (\d+) "\$py" -m pytest', sh)      # the launch tests, the rest
    (gk,) = re.findall(r'timeout -k (\d+) "\$gpu_s" "\$py" benchmarks/gpu.py', sh)
    ((cap, gpu_s),) = re.findall(r'\[ "\$gpu_s" -gt (\d+) \] && gpu_s=(\d+)', sh)
    (limit,) = re.findall(r'GPU_SH_LIMIT_S:-(\d+)\} - SECONDS - 10', sh)
    assert cap == gpu_s and int(limit) - 10 + int(gk) < 600
    assert len(tests) == 2 and sum(int(k) + int(s) for k, s in tests) + int(gpu_s) + int(gk) < 600
    (wk, warm_s), = re.findall(r'timeout -k (\d+) (\d+) "\$py" benchmarks/gpu_cache_warm.py', sh)   # beside the tests
    assert int(wk) + int(warm_s) <= sum(int(k) + int(s) for k, s in tests)
    assert sum(gpu_config.BUDGETS_CUDA.values()) <= gpu_config.TOTAL_CUDA_S <= int(gpu_s) - 40
    assert math.isclose(gpu_config.Budget({"decode": 10}, 100, ["decode"], 3.0).budgets["decode"], 30)
    # what earlier steps left unused goes to the next step; later steps keep their whole budgets
    b = gpu_config.Budget({"prewarm": 50, "ops-float32": 75, "decode": 80}, 205, ["prewarm", "ops-float32", "decode"])
    assert b.deadline("prewarm")[1] == 50
    b.t0 -= 10                                     # prewarm done after 10 s: 40 s unused
    assert b.deadline("ops-float32")[1] == pytest.approx(115, abs=0.15)
    b.t0 -= 115                                    # ops took its 115 (125 s in all): decode keeps its 80
    assert b.deadline("decode")[1] == pytest.approx(80, abs=0.15)
    b.t0 -= 100                                    # 100 s over: decode gets a quarter of its own at least
    assert b.deadline("decode")[1] == pytest.approx(20, abs=0.15)


def test_a_gap_filling_call_gets_the_prewarm_step_too(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--device", "cpu",
                           "--steps", "copy", "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(json.loads((tmp_path / "gpu-summary-smoke.json").read_text())["steps"]) == ["copy"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--device", "cpu",
                           "--steps", "ops-bfloat16", "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    steps = json.loads((tmp_path / "gpu-summary-smoke.json").read_text())["steps"]
    assert list(steps) == ["prewarm", "copy", "ops-bfloat16"] and steps["prewarm"]["status"] == "ok"
    assert "prewarm added" in proc.stdout and "copy added" in proc.stdout
    recs = json.loads((tmp_path / "ops-smoke-bfloat16.json").read_text())   # fractions of this run's copy
    assert recs and all(r["copy_ceiling_gbps"] for r in recs)


def test_smoke_summary_has_the_format_the_h200_acceptance_reads(smoke):
    """tests/test_gpu_results.py reads check names and decode fields from gpu.py's summary:
    they must be the ones gpu.py writes (here in the smoke summary, which is not an H200's)."""
    from test_gpu_results import REQUIRED_CHECKS, h200_failures
    _, _, summary = smoke
    assert set(REQUIRED_CHECKS) <= {c["name"] for c in summary["checks"]}
    assert {"preset", "batch", "variant", "generate_tokens_per_s", "kernels_per_token"} <= set(summary["decode"][0])
    (served,) = [r for r in summary["decode"] if r["variant"] == "served"]      # the service's path
    assert served["error"] is None and served["generate_tokens_per_s"] > 0 and served["aten_ops_per_token"] > 0
    failures = h200_failures(summary, set())
    assert failures[0].startswith("not an H200") and "missing ops-h200.json" in failures
    assert "decode lfm2-demo b1 before: tokens/s or kernels per token not measured" in failures   # no CUDA count


def test_gpu_sh_runs_every_test_file_with_cuda_only_tests():
    """gpu.sh names its test files (the device has no service packages for the rest): a file
    that gains a @pytest.mark.gpu test must be added there, or that test never runs."""
    script = (REPO / "benchmarks" / "gpu.sh").read_text()
    named = set(re.findall(r"tests/(test_\w+\.py)", script))
    marked = {p.name for p in (REPO / "tests").glob("test_*.py")
              if re.search(r"^@pytest\.mark\.gpu$", p.read_text(), re.M)}
    assert marked and marked <= named, sorted(marked - named)
