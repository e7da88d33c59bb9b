"""benchmarks/gpu.py: the CPU smoke of the one-call GPU script, and its checkers.

The smoke runs the script as the device call does (a subprocess, `--smoke --device cpu`),
fused in Triton's interpreter (TRITON_INTERPRET=1 from conftest.py, inherited), and checks
what it wrote. The checkers are then fed deliberately wrong impls and synthetic CUDA records,
since their CUDA branches never run here.
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
    out, _, _ = smoke
    committed = json.loads((REPO / "benchmarks" / "results" / "ops-cpu.json").read_text())[0]
    for name in ("ops-smoke.json", "ops-smoke-bfloat16.json"):
        recs = json.loads((out / name).read_text())
        assert recs and all(set(committed) | BANDWIDTH_KEYS | ENV_KEYS <= set(r) for r in recs)
        for r in recs:
            assert r["error"] is None, r
            assert r["min_bytes"] == gpu_report.min_bytes(r) and r["achieved_gbps"] > 0 and r["copy_fraction"] > 0
        assert {r["impl"] for r in recs} == {"per_group", "slice_sum", "fused", "native", "auto"}


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


# ---------------------------------------------------------------- the checker flags wrong impls

def _shifted(op):
    """A wrong impl: the right answer rolled by one position along the last dim."""
    def fn(*args, **kwargs):
        return gpu_checks.public_op(op)(*args, **kwargs).roll(1, dims=-1)
    return fn


@pytest.mark.parametrize("dtype", [pytest.param(d, id=n) for n, d in gpu_checks.DTYPES.items()])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in gpu_checks.SMOKE_CASES[::3]])
def test_planted_wrong_impl_fails(case, dtype):
    right = gpu_checks.check(case, dtype, "slice_sum", "cpu")
    wrong = gpu_checks.check(case, dtype, "slice_sum", "cpu", fn=_shifted(case.op))
    assert right["passed"] and right["rel_err"] <= right["tol"]
    assert not wrong["passed"] and wrong["reason"] == "tolerance" and wrong["rel_err"] > 0.1


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize("kind", ["nan", "shape", "dtype", "raises", "tiny-error-fp32", "state-not-updated"])
def test_checker_flags_each_kind_of_wrong(kind):
    case = gpu_checks.SMOKE_CASES[0] if kind != "state-not-updated" else next(
        c for c in gpu_checks.SMOKE_CASES if c.op == "decode")
    op = gpu_checks.public_op(case.op)
    wrong = {
        "nan": lambda *a, **k: op(*a, **k) * float("nan"),
        "shape": lambda *a, **k: op(*a, **k)[..., :-1],
        "dtype": lambda *a, **k: op(*a, **k).double(),
        "raises": _boom,
        "tiny-error-fp32": lambda *a, **k: op(*a, **k) * (1 + 1e-3),        # 1e-3 > fp32's 1e-5
        "state-not-updated": lambda x, state, *a, **k: op(x, state.clone(), *a, **k),
    }[kind]
    row = gpu_checks.check(case, torch.float32, "native", "cpu", fn=wrong)
    assert row["passed"] is False
    expect = {"nan": "non-finite output", "raises": "error", "tiny-error-fp32": "tolerance",
              "state-not-updated": "tolerance"}
    if kind in expect:
        assert row["reason"] == expect[kind]
    else:
        assert row["reason"].startswith(kind)
    if kind == "state-not-updated":
        assert row["rel_err"] < 1e-6 and row["state_rel_err"] > 0.1   # output right, state wrong


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in gpu_checks.SMOKE_CASES[:3]])
def test_an_output_left_half_unwritten_never_passes(case):
    """A kernel that skips a tile: its launcher's torch.empty output keeps whatever the memory
    held. After a correct impl of the same case has run (its freed output is the block most
    likely to be handed out next), the row must still fail: poison_outputs leaves NaN there."""
    op = gpu_checks.public_op(case.op)

    def half_written(*args, **kwargs):
        full = op(*args, **kwargs)
        out = torch.empty_like(full)                                   # as a launcher allocates
        out[..., : full.shape[-1] // 2] = full[..., : full.shape[-1] // 2]
        return out
    assert gpu_checks.check(case, torch.float32, "native", "cpu")["passed"]
    row = gpu_checks.check(case, torch.float32, "native", "cpu", fn=half_written)
    assert row["passed"] is False and row["reason"] in ("non-finite output", "tolerance")


def test_poison_outputs_frees_nan_blocks_of_the_output_size(monkeypatch):
    made = []
    real_full = torch.full
    monkeypatch.setattr(torch, "full", lambda *a, **k: made.append(real_full(*a, **k)) or made[-1])
    gpu_checks.poison_outputs((2, 3, 5), torch.bfloat16, "cpu")
    assert len(made) == gpu_checks.POISON_BLOCKS
    assert all(t.shape == (2, 3, 5) and t.dtype == torch.bfloat16 and t.isnan().all() for t in made)


def test_failures_are_tallied_and_deadline_skips():
    rows = []
    res = gpu_checks.run(["native"], ["float32"], "cpu", deadline=0.0, cases=gpu_checks.SMOKE_CASES[:2], rows=rows)
    assert res["checked"] == 0 and res["skipped"] == 2 and all(r["skipped"] for r in rows)
    bad = gpu_checks.check(gpu_checks.SMOKE_CASES[0], torch.float32, "native", "cpu",
                           fn=lambda *a, **k: gpu_checks.public_op("conv1d")(*a, **k) + 1)
    res = gpu_checks.tally([bad], ["native"], ["float32"], gpu_checks.SMOKE_CASES[:1])
    assert res["failed"] and res["failed"][0].startswith("native/float32/") and res["passed"] == 0


# ---------------------------------------------------------------- CUDA-only branches, fed by hand

def _rec(name, impl, us, *, x=(1, 2048, 21), k=3, op="conv1d", kernels=1, stride=1, padding=0, dtype="float32"):
    w = [x[1], 1, *((k,) if isinstance(k, int) else k)]
    return {"shape": {"name": name, "op": op, "x": list(x), "weight": w, "stride": stride, "padding": padding,
                      "dilation": 1}, "impl": impl, "median_us": us, "cuda_kernels": kernels, "device": "cuda",
            "dtype": dtype}


def test_min_bytes_and_output_sizes():
    seed = _rec("seed-c2048", "fused", 10.0)
    assert gpu_report.min_bytes(seed) == 4 * (2048 * 21 + 2048 * 3 + 2048 * 19)      # x + w + valid out
    s2 = _rec("s2", "fused", 1.0, op="conv2d", x=(32, 96, 112, 112), k=(3, 3), stride=2, padding=1, dtype="bfloat16")
    assert gpu_report.out_numel(s2["shape"]) == 32 * 96 * 56 * 56
    dec = _rec("dec", "fused", 1.0, op="decode", x=(16, 2048))
    assert gpu_report.min_bytes(dec) == 4 * (16 * 2048 + 2 * 16 * 2048 * 2 + 2048 * 3 + 16 * 2048)
    causal = _rec("c", "fused", 1.0, x=(8, 1024, 512), padding="causal")
    assert gpu_report.out_numel(causal["shape"]) == 8 * 1024 * 512


def test_ops_checks_on_synthetic_cuda_records():
    big = dict(x=(32, 96, 112, 112), k=(3, 3), op="conv2d", stride=2, padding=1)
    recs = [_rec("seed-c2048", "per_group", 20_000.0, kernels=4097), _rec("seed-c2048", "fused", 10.0),
            _rec("seed-c2048", "native", 12.0, kernels=1), _rec("seed-c2048", "auto", 10.2),
            _rec("big", "fused", 55.0, **big), _rec("big", "native", 50.0, **big), _rec("big", "auto", 56.0, **big)]
    gpu_report.add_bandwidth(recs, ceiling_gbps=4000.0)
    checks = {c["name"].split("] ", 1)[1]: c for c in gpu_report.ops_checks("float32", recs, n_suite=2)}
    assert checks[gpu_report.SEED_KERNELS]["status"] == "met"
    assert checks[gpu_report.SEED_SPEEDUP]["status"] == "met" and checks[gpu_report.SEED_SPEEDUP]["speedup"] == 2000.0
    mb = checks[gpu_report.MEMBOUND]                   # 'big' moves 193 MB: 48 us at 4 TB/s
    assert list(mb["fractions"]) == ["big"] and mb["status"] == "met"
    assert checks[gpu_report.FUSED_NATIVE]["status"] == "NOT met" and "big 1.10x" in checks[gpu_report.FUSED_NATIVE]["detail"]
    assert checks[gpu_report.AUTO_BEST]["status"] == "NOT met" and "big" in checks[gpu_report.AUTO_BEST]["detail"]
    incomplete = gpu_report.ops_checks("float32", recs[:4], n_suite=59)
    assert {c["status"] for c in incomplete if gpu_report.AUTO_BEST in c["name"]} == {"incomplete"}


def test_memory_bound_check_is_never_met_with_a_memory_bound_shape_unmeasured():
    """A memory-bound shape whose fused time is missing (fused failed there, or the budget cut
    the shape) leaves the check incomplete; it was 'met' on the shapes that happened to run."""
    big = dict(x=(32, 96, 112, 112), k=(3, 3), op="conv2d", stride=2, padding=1)
    big2 = dict(x=(32, 144, 56, 56), k=(3, 3), op="conv2d", stride=1, padding=1)
    ok = [_rec("big", "fused", 50.0, **big), _rec("big", "native", 60.0, **big)]
    failed = [_rec("big2", "fused", None, **big2), _rec("big2", "native", 40.0, **big2)]
    gpu_report.add_bandwidth(ok + failed, ceiling_gbps=4000.0)
    mb = [c for c in gpu_report.ops_checks("float32", ok + failed, n_suite=2) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "incomplete" and mb[0]["missing"] == ["big2"] and "big2" in mb[0]["detail"]
    # the suite says which shapes are memory-bound, measured or not (a budget cut leaves no record)
    suite = [r["shape"] for r in ok + failed[1:]] + [{**_rec("tiny", "fused", 1.0)["shape"]}]
    mb = [c for c in gpu_report.ops_checks("float32", ok, 0, suite, 4000.0) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "incomplete" and mb[0]["missing"] == ["big2"]
    mb = [c for c in gpu_report.ops_checks("float32", ok, 0, suite[:2], 4000.0) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "met" and list(mb[0]["fractions"]) == ["big"]
    no_copy = [dict(r) for r in ok]
    gpu_report.add_bandwidth(no_copy, ceiling_gbps=None)                   # the copy step failed
    mb = [c for c in gpu_report.ops_checks("float32", no_copy, 0, suite, None) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "n/a" and "no copy ceiling" in mb[0]["detail"]      # never met without one
    # which shapes count: <= 9 taps and >= 20 us at the ceiling (a K=31 or 7x7 shape never does)
    from benchmarks import ops
    names = {s.name for s in ops.SUITE if gpu_report.is_membound(ops.shape_dict(s), "float32", 4000.0)}
    assert "shortconv-long-1x4096x4096" in names and "mbv2-b32-c96@112-s2" in names
    assert not names & {"conformer-k31-8x256x512", "convnext-7x7-1x96@56", "lfm3-1.7b-prefill-8x512", ops.SEED.name}


def test_decode_checks_on_synthetic_rows():
    rows = [dict(preset="p", batch=1, variant="before", kernels_per_token=30_000, error=None),
            dict(preset="p", batch=1, variant="after-eager", kernels_per_token=60, error=None),
            dict(preset="p", batch=1, variant="after", kernels_per_token=60, cuda_graph=True,
                 host_launches_per_token=1, error=None)]
    assert [c["status"] for c in gpu_report.decode_checks(rows)] == ["met", "met"]
    rows[2]["host_launches_per_token"] = 61
    assert gpu_report.decode_checks(rows)[1]["status"] == "NOT met"
    rows.append(dict(preset="p", batch=1, variant="served", kernels_per_token=60, cuda_graph=True,
                     host_launches_per_token=1, error=None))
    served = gpu_report.decode_checks(rows)[2]
    assert "served continuous batch graph" in served["name"] and served["status"] == "met"


def test_compiled_only_on_big_float32_shapes_on_cuda():
    from benchmarks import gpu_steps, ops
    run = SimpleNamespace(cfg={"ops_impls": list(ops.IMPLS)}, device="cuda")
    by = {s.name: s for s in ops.SUITE}
    assert "compiled" not in gpu_steps._ops_impls(run, ops.SEED, "float32")
    assert "compiled" in gpu_steps._ops_impls(run, by["shortconv-long-1x4096x4096"], "float32")
    assert "compiled" not in gpu_steps._ops_impls(run, by["shortconv-long-1x4096x4096"], "bfloat16")


def test_tags_and_budgets_never_touch_committed_results(tmp_path):
    from benchmarks import gpu, gpu_config
    assert gpu_config.run_tag("cuda", False, "NVIDIA H200") == "h200"
    assert gpu_config.run_tag("cuda", False, "NVIDIA A100") == "cuda"
    assert gpu_config.run_tag("cpu", False, "") == "cpu-full" and gpu_config.run_tag("cuda", True, "H200") == "smoke"
    fake = SimpleNamespace(out=tmp_path, files=[])
    with pytest.raises(RuntimeError, match="committed"):
        gpu.Run.path(fake, "ops-cpu.json")
    b = gpu_config.Budget(gpu_config.BUDGETS_CUDA, 0.0, ["ops-float32", "decode"])      # total spent
    assert b.deadline("ops-float32")[1] == 0.25 * gpu_config.BUDGETS_CUDA["ops-float32"]
    # gpu.sh: the CUDA tests' timeout + gpu.py's (each + its kill grace) fit the device tool's 600 s
    # per call, and gpu.py's steps leave >= 40 s of its own timeout for start-up and the summary.
    sh = (REPO / "benchmarks" / "gpu.sh").read_text()
    (tk, tests_s), = re.findall(r'timeout -k (\d+) (\d+) "\$py" -m pytest', sh)
    (gk, gpu_s), = re.findall(r'timeout -k (\d+) (\d+) "\$py" benchmarks/gpu.py', sh)
    assert int(tests_s) + int(tk) + int(gpu_s) + int(gk) < 600
    assert sum(gpu_config.BUDGETS_CUDA.values()) <= gpu_config.TOTAL_CUDA_S <= int(gpu_s) - 40
    assert math.isclose(gpu_config.Budget({"decode": 10}, 100, ["decode"], 3.0).budgets["decode"], 30)


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
