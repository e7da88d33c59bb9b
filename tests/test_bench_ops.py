"""The timing harness (benchmarks/timing.py) and a --quick run of benchmarks/ops.py."""
import json
import random
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import timing  # noqa: E402


# ---------------------------------------------------------------- timing.py

@pytest.mark.parametrize("n", [pytest.param(n, id=f"n{n}") for n in (1, 2, 7, 100)])
def test_quantile_matches_numpy_linear(n):
    np = pytest.importorskip("numpy")
    vals = sorted(random.Random(n).uniform(0, 100) for _ in range(n))
    for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0):
        assert timing.quantile(vals, q) == pytest.approx(float(np.percentile(vals, 100 * q)))


def test_summarize_reports_microseconds_and_order():
    t = timing.summarize([3e-6, 1e-6, 2e-6, 4e-6, 5e-6], inner=4)
    assert (t.min_us, t.median_us, t.repeats, t.inner) == (pytest.approx(1.0), pytest.approx(3.0), 5, 4)
    assert t.min_us <= t.p10_us <= t.q25_us <= t.median_us <= t.q75_us <= t.p90_us
    assert t.as_dict()["iqr_us"] == pytest.approx(2.0)


def test_interleaved_ratio_and_adaptive_repeats():
    """Sleeps of 1 ms and 4 ms: medians near truth, ratio ~4, the slow one gets fewer samples,
    and the calls really alternate (round-robin), so drift hits both alike."""
    order = []

    def sleeper(name, s):
        def fn():
            order.append(name)
            time.sleep(s)
        return fn

    stats = timing.time_interleaved({"fast": sleeper("fast", 1e-3), "slow": sleeper("slow", 4e-3)},
                                    budget_s=0.2, min_repeats=5, max_repeats=60)
    assert stats["fast"].median_us == pytest.approx(1000, rel=0.5)
    assert 3.0 < stats["slow"].median_us / stats["fast"].median_us < 5.0
    assert stats["slow"].repeats < stats["fast"].repeats and stats["slow"].repeats >= 5
    timed = order[-(stats["fast"].repeats + stats["slow"].repeats):]       # after warm-up
    first_slow_block = timed[: 2 * stats["slow"].repeats]
    assert first_slow_block.count("slow") == stats["slow"].repeats          # interleaved, not A then B


def test_fast_fn_is_batched_into_samples():
    stats = timing.time_fn(lambda: None, budget_s=0.02, max_repeats=10)
    assert stats.inner > 1 and stats.repeats == 10


def spin(us: float):
    """A fn that busy-waits `us` microseconds."""
    def fn():
        end = time.perf_counter() + us * 1e-6
        while time.perf_counter() < end:
            pass
    return fn


def test_one_inner_per_shape_except_slow_baselines():
    """Same-cost fns must be sampled alike (equal inner), else their medians skew differently."""
    stats = timing.time_interleaved({"a": spin(5), "b": spin(30), "slow": lambda: time.sleep(0.012)},
                                    budget_s=0.1, min_repeats=3, max_repeats=20)
    assert stats["a"].inner == stats["b"].inner > 1 and stats["slow"].inner == 1
    assert 3 < stats["b"].median_us / stats["a"].median_us < 9


def test_every_sample_lasts_min_sample_s_even_for_a_10x_slower_fn():
    """A fn >= 10x slower than the fastest but under min_sample_s gets its own inner, so its
    samples still last >= min_sample_s (they were one call: two device syncs around ~200 us)."""
    stats = timing.time_interleaved({"fast": spin(20), "mid": spin(400), "slow": lambda: time.sleep(0.012)},
                                    budget_s=0.1, min_repeats=3, max_repeats=10, min_sample_s=2e-3)
    assert stats["fast"].inner >= 50 and stats["slow"].inner == 1
    assert 2 <= stats["mid"].inner < stats["fast"].inner
    assert stats["mid"].inner * stats["mid"].median_us >= 0.8 * 2e3        # us per sample


@pytest.mark.parametrize("kwargs", [pytest.param(dict(warmup=0), id="warmup0"),
                                    pytest.param(dict(min_repeats=5, max_repeats=2), id="repeats"),
                                    pytest.param(dict(budget_s=0), id="budget0")])
def test_bad_options_raise_valueerror(kwargs):
    with pytest.raises(ValueError, match="expected"):
        timing.time_fn(lambda: None, **kwargs)


def test_thread_cpu_clock_counts_work_not_waiting():
    """thread_cpu: a 2 ms sleep costs ~0 CPU, a 2 ms spin ~2 ms; wall sees both."""
    def spin():
        end = time.perf_counter() + 2e-3
        while time.perf_counter() < end:
            pass
    fns = {"sleep": lambda: time.sleep(2e-3), "spin": spin}
    cpu = timing.time_interleaved(fns, clock="thread_cpu", budget_s=0.05, min_repeats=5, max_repeats=10)
    wall = timing.time_interleaved(fns, clock="wall", budget_s=0.05, min_repeats=5, max_repeats=10)
    assert cpu["sleep"].median_us < 500 < 1500 < cpu["spin"].median_us
    assert wall["sleep"].median_us > 1500 and wall["spin"].median_us > 1500
    with pytest.raises(ValueError, match="'wall' or 'thread_cpu'"):
        timing.time_fn(lambda: None, clock="cycles")


def test_environment_names_device_and_versions():
    env = timing.environment("cpu")
    assert env["device"] == "cpu" and env["device_name"] == env["cpu"] and env["torch"]
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        timing.synchronizer("meta")


# ---------------------------------------------------------------- ops.py --quick

def test_ops_quick_writes_json_md_png(tmp_path):
    """--quick on every quick shape with the fast impls (per_group and compiled are covered by
    the committed results and the next test: they cost seconds per call here)."""
    pytest.importorskip("models.depthwise.dispatch", reason="depthwise dispatch not landed yet")
    from benchmarks import ops
    assert ops.main(["--quick", "--out", str(tmp_path), "--budget-s", "0.05",
                     "--impls", "slice_sum,native,auto"]) == 0
    records = json.loads((tmp_path / "ops-cpu-quick.json").read_text())
    assert {r["shape"]["name"] for r in records} == set(ops.QUICK_NAMES)
    assert len(records) == 3 * len(ops.QUICK_NAMES)
    for r in records:
        assert r["error"] is None, r
        assert r["device"] == "cpu" and r["dtype"] == "float32" and r["torch"] and r["device_name"]
        assert r["median_us"] > 0 and r["repeats"] >= 1 and r["aten_ops"] >= 1
        assert r["cuda_kernels"] is None                                      # CPU run
        assert r["auto_choice"] in ("slice_sum", "compiled", "native")
        assert r["speedup_vs_native"] > 0 and r["speedup_vs_per_group"] is None
        assert set(r["shape"]) >= {"name", "op", "x", "weight", "stride", "padding", "channels"}
    seed = {r["impl"]: r for r in records if r["shape"]["name"] == "seed-c2048"}
    assert seed["native"]["speedup_vs_native"] == pytest.approx(1.0)
    assert seed["slice_sum"]["aten_ops"] < 20 and seed["native"]["aten_ops"] < 10
    md = (tmp_path / "ops-cpu-quick.md").read_text()
    assert "seed-c2048" in md and "auto picks" in md and "cores" in md
    png = (tmp_path / "ops-cpu-quick.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    (tmp_path / "ops-cpu-quick.md").unlink()
    assert ops.main(["--render", str(tmp_path / "ops-cpu-quick.json")]) == 0   # md from JSON alone
    assert "auto within 5% of the fastest impl on" in (tmp_path / "ops-cpu-quick.md").read_text()


def test_ops_per_group_counts_one_conv_per_channel(tmp_path):
    pytest.importorskip("models.depthwise.dispatch", reason="depthwise dispatch not landed yet")
    from benchmarks import ops
    assert ops.main(["--quick", "--shapes", "sweep-c64", "--out", str(tmp_path), "--budget-s", "0.05",
                     "--impls", "per_group,native"]) == 0
    recs = {r["impl"]: r for r in json.loads((tmp_path / "ops-cpu-quick.json").read_text())}
    assert recs["per_group"]["aten_ops"] >= 64 > recs["native"]["aten_ops"]
    assert recs["per_group"]["speedup_vs_per_group"] == pytest.approx(1.0)
    assert recs["native"]["speedup_vs_per_group"] == pytest.approx(
        recs["per_group"]["median_us"] / recs["native"]["median_us"], rel=1e-2)


@pytest.mark.parametrize("argv, match", [
    pytest.param(["--impls", "bogus"], "--impls", id="bad-impl"),
    pytest.param(["--shapes", "no-such-shape"], "matches none", id="bad-shape"),
])
def test_ops_bad_arguments(tmp_path, argv, match, capsys):
    from benchmarks import ops
    with pytest.raises((ValueError, SystemExit)) as exc:
        ops.main(argv + ["--out", str(tmp_path)])
    assert match in (str(exc.value) + capsys.readouterr().err)


def test_report_renders_shapes_where_an_impl_was_not_timed(tmp_path):
    """On CUDA `compiled` is timed on the big shapes only: the report (and its re-render from a
    results JSON) shows '-' for it elsewhere. Before, the first such shape raised KeyError and the
    whole ops step of the H200 run lost its .md and .png."""
    from benchmarks import ops_report
    from benchmarks.ops_suite import SUITE, shape_dict
    env = {"device": "cuda", "device_name": "NVIDIA H200", "cpu_count": 16, "torch_threads": 16,
           "torch": "2.11", "triton": "3.6"}
    small, big = SUITE[0], SUITE[-1]
    records = []
    for shape, impls in ((small, ("slice_sum", "fused", "native", "auto")),
                         (big, ("slice_sum", "compiled", "fused", "native", "auto"))):
        for impl in impls:
            t = random.uniform(10, 100)
            records.append({"shape": shape_dict(shape), "dtype": "float32", "impl": impl, "median_us": t,
                            "p10_us": t, "p90_us": t, "repeats": 5, "aten_ops": 1, "cuda_kernels": 1,
                            "speedup_vs_native": 1.0, "speedup_vs_per_group": None, "error": None,
                            "auto_choice": "fused", **env})
    path = tmp_path / "ops-h200.json"
    path.write_text(json.dumps(records))
    ops_report.render(path)
    rows = {line.split(" | ")[0].strip("| "): line for line in path.with_suffix(".md").read_text().splitlines()
            if line.split(" | ")[1:2] and line.split(" | ")[1].startswith("x(")}   # the first table's rows
    header = next(line for line in path.with_suffix(".md").read_text().splitlines() if line.startswith("| shape | dims |"))
    compiled_col = [c.strip() for c in header.split("|")].index("compiled")
    assert rows[small.name].split("|")[compiled_col].strip() == "-"
    assert rows[big.name].split("|")[compiled_col].strip() != "-"
    assert path.with_suffix(".png").is_file()
