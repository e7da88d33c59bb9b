"""benchmarks/models.py: a --quick run into tmp, and the committed CPU results' acceptance."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "models-cpu.json"
QUICK_IMPLS = ("per_group", "slice_sum", "native", "auto")   # compiled: slow to compile on 2 cores


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from benchmarks import models as bench
    out = tmp_path_factory.mktemp("bench-models")
    assert bench.main(["--quick", "--out", str(out), "--impls", ",".join(QUICK_IMPLS),
                       "--budget-s", "0.05"]) == 0
    return out, json.loads((out / "models-cpu-quick.json").read_text())


def test_quick_run_writes_json_md_png(quick_run):
    out, result = quick_run
    png = (out / "models-cpu-quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (out / "models-cpu-quick.md").read_text()
    assert "| lfm2-prefill-32-b1 | per_group |" in md and "Acceptance" in md
    assert result["quick"] and result["environment"]["device"] == "cpu"
    cases = {r["case"] for r in result["records"]}
    assert cases == {"lfm2-prefill-32-b1", "lfm2-decode@32-b1", "mobilenet_v2-224px-b1"}
    assert len(result["records"]) == 3 * len(QUICK_IMPLS)
    assert set(result["acceptance"]) == {"prefill", "decode"}


def test_quick_run_records_are_consistent(quick_run):
    _, result = quick_run
    by = {(r["case"], r["impl"]): r for r in result["records"]}
    for r in result["records"]:
        assert r["error"] is None, r
        assert r["median_us"] > 0 and r["p10_us"] <= r["median_us"] <= r["p90_us"]
        assert 0.0 < r["dw_share"] < 1.0 and r["dw_us"] <= r["dw_forward_us"]
        assert r["cuda_kernels"] is None                       # CPU run
        # every LFM2 conv layer / MobileNet depthwise layer records exactly once per forward
        assert r["dw_calls"] == (17 if r["model"] == "mobilenet_v2" else 5)
    for case in ("lfm2-prefill-32-b1", "lfm2-decode@32-b1", "mobilenet_v2-224px-b1"):
        pg, nat = by[(case, "per_group")], by[(case, "native")]
        # per_group launches O(channels) convs: thousands of aten ops more than native
        assert pg["aten_ops"] > nat["aten_ops"] + 1000
        assert pg["speedup_vs_per_group"] == 1.0 and nat["speedup_vs_native"] == 1.0


def test_bad_arguments_fail_clearly():
    from benchmarks import models as bench
    with pytest.raises(SystemExit):
        bench.main(["--impls", "per_group,warp"])
    with pytest.raises(SystemExit):
        bench.main(["--cases", "no-such-case"])


def test_acceptance_rule():
    from benchmarks.models import acceptance
    rec = lambda kind, impl, share: {"model": "lfm2", "kind": kind, "case": f"lfm2-{kind}-b1",  # noqa: E731
                                     "impl": impl, "dw_share": share}
    ok = acceptance([rec("prefill", "per_group", 0.6), rec("prefill", "auto", 0.04),
                     rec("decode", "per_group", 0.9), rec("decode", "auto", 0.06)])
    assert ok["prefill"]["met"] and not ok["decode"]["met"]
    assert not acceptance([])["prefill"]["met"]


def _committed():
    result = json.loads(RESULTS.read_text())
    assert not result["quick"] and result["environment"]["device"] == "cpu"
    return result


def _lfm2_shares(result):
    """{(kind, batch): {impl: dw_share}} for the LFM2 cases."""
    out = {}
    for r in result["records"]:
        if r["model"] == "lfm2":
            assert r["error"] is None, r
            out.setdefault((r["kind"], r["batch"]), {})[r["impl"]] = r["dw_share"]
    return out


needs_results = pytest.mark.skipif(not RESULTS.is_file(),
                                   reason="benchmarks/results/models-cpu.json not committed")


@needs_results
def test_committed_cpu_results_show_before_and_after():
    """The committed full CPU run has every case, and on LFM2 the depthwise layers' share
    under per_group (before) is at least 3x their share under auto (after) and per_group is
    the slower; decode, where the matmuls are tiny, is dominated by per_group's O(channels)
    launches."""
    result = _committed()
    assert {(r["model"], r["kind"], r["batch"]) for r in result["records"]} == {
        ("lfm2", "prefill", 1), ("lfm2", "prefill", 8), ("lfm2", "decode", 1), ("lfm2", "decode", 8),
        ("mobilenet_v2", "forward", 1), ("mobilenet_v2", "forward", 32)}
    shares = _lfm2_shares(result)
    med = {(r["kind"], r["batch"], r["impl"]): r["median_us"] for r in result["records"]}
    for key, s in shares.items():
        assert s["per_group"] >= 3 * s["auto"], (key, s)
        assert med[(*key, "per_group")] > med[(*key, "auto")], key
        if key[0] == "decode":
            assert s["per_group"] >= 0.5, (key, s)


@needs_results
def test_committed_cpu_results_meet_acceptance():
    """Acceptance: LFM2 prefill and decode spend >= 50% of forward time in the depthwise
    layers under per_group and <= 5% under auto."""
    for key, s in _lfm2_shares(_committed()).items():
        assert s["per_group"] >= 0.5 and s["auto"] <= 0.05, (key, s)


def test_models_are_benchmarked_in_the_served_dtype():
    """bfloat16 on CUDA, float32 on CPU: what Settings.resolved_dtype serves by default."""
    import torch

    from benchmarks import models as bench_models
    from service.settings import Settings
    for device in ("cpu", "cuda"):
        assert str(bench_models.served_dtype(device)) == f"torch.{Settings().resolved_dtype(device)}"
    built = bench_models.build_models({"mobilenet_v2"}, "cpu", torch.bfloat16)
    case = bench_models.Case("mobilenet_v2", "forward", 1, 32)
    with torch.inference_mode():
        out = bench_models.make_call(case, built["mobilenet_v2"], "cpu")()   # input cast to the model's dtype
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1000) and out.isfinite().all()
