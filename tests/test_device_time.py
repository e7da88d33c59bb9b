"""The ops benchmark's device-time column: `device_us` (per call, from CUDA graph replays timed
with CUDA events, benchmarks/timing.py's time_cuda_graph) beside the wall-clock `median_us`.

On a slow host an eager call costs 20-120 us of Python and launch, so a wall-clock sample of
back-to-back calls measures the host, not the kernel; the memory-bound acceptance check is a
property of the kernel and reads device time when the records have it. These tests run on
synthetic records (CPU); the one that times a real kernel needs CUDA.
"""
from __future__ import annotations

import json
import time

import pytest
import torch

from benchmarks import gpu_report, ops_report, timing
from benchmarks.ops_suite import SUITE, Shape, shape_dict

CEILING = 4000.0                                            # GB/s, a made-up copy ceiling
# A memory-bound shape: 192 MB of minimum bytes in float32, 48 us at CEILING.
BIG = Shape("dw-big", "conv2d", (32, 96, 112, 112), (3, 3), stride=2, padding=1, channels_last=True)
SMALL = Shape("dw-small", "conv1d", (1, 64, 32), 3, padding=1)
ENV = {"device": "cuda", "device_name": "NVIDIA H200", "cpu_count": 16, "torch_threads": 16,
       "torch": "2.11", "triton": "3.6"}


def _rec(shape: Shape, impl: str, wall_us: float, device_us: float | None, **extra) -> dict:
    return {"shape": shape_dict(shape), "dtype": "float32", "impl": impl, "median_us": wall_us,
            "p10_us": wall_us, "p90_us": wall_us, "repeats": 5, "aten_ops": 1, "cuda_kernels": 1,
            "speedup_vs_native": None, "speedup_vs_per_group": None, "error": None,
            "auto_choice": "fused", "device_us": device_us, "device_copy_fraction": None, **ENV, **extra}


def _records(fused_dev: float | None, native_dev: float | None) -> list[dict]:
    """Fused at 115 us wall (40% of CEILING: the host) but `fused_dev` us on the device."""
    recs = [_rec(BIG, "fused", 115.0, fused_dev), _rec(BIG, "native", 120.0, native_dev),
            _rec(SMALL, "fused", 30.0, None if fused_dev is None else 3.0),
            _rec(SMALL, "native", 31.0, None if native_dev is None else 4.0)]
    gpu_report.add_bandwidth(recs, CEILING)
    return recs


def _check(checks: list[dict], name: str) -> dict:
    return {c["name"]: c for c in checks}[f"[float32] {name}"]


def test_device_copy_fraction_is_min_bytes_over_device_time_against_the_ceiling():
    recs = _records(fused_dev=50.0, native_dev=None)
    fused, native = recs[0], recs[1]
    want = gpu_report.min_bytes(fused) / (50.0 * 1e3) / CEILING
    assert fused["device_copy_fraction"] == pytest.approx(want, rel=1e-3)
    assert fused["device_copy_fraction"] > fused["copy_fraction"]           # the host hid the kernel
    assert native["device_copy_fraction"] is None                           # not graph-timed
    old = {k: v for k, v in _rec(BIG, "fused", 100.0, None).items() if not k.startswith("device_")}
    old["device"] = "cuda"
    gpu_report.add_bandwidth([old], CEILING)                                # a record from before the column
    assert old["device_copy_fraction"] is None and old["copy_fraction"] > 0


def test_memory_bound_check_reads_device_time_when_the_records_have_it():
    dev = _check(gpu_report.ops_checks("float32", _records(50.0, 60.0), 2, ceiling_gbps=CEILING), gpu_report.MEMBOUND)
    assert dev["status"] == "met" and "device time, graph replay" in dev["detail"], dev
    wall = _check(gpu_report.ops_checks("float32", _records(None, None), 2, ceiling_gbps=CEILING), gpu_report.MEMBOUND)
    assert wall["status"] == "NOT met" and "device time" not in wall["detail"], wall
    slow = _check(gpu_report.ops_checks("float32", _records(100.0, 60.0), 2, ceiling_gbps=CEILING), gpu_report.MEMBOUND)
    assert slow["status"] == "NOT met" and "dw-big" in slow["detail"], slow


def test_fused_vs_native_on_device_time_is_a_check_of_its_own():
    checks = gpu_report.ops_checks("float32", _records(50.0, 60.0), 2, ceiling_gbps=CEILING)
    dev = _check(checks, gpu_report.FUSED_NATIVE_DEVICE)
    assert dev["status"] == "met" and dev["ratios"]["dw-big"] == pytest.approx(50 / 60, rel=1e-3)
    assert _check(checks, gpu_report.FUSED_NATIVE)["status"] == "met"      # the wall check stays
    slower = _check(gpu_report.ops_checks("float32", _records(70.0, 60.0), 2, ceiling_gbps=CEILING),
                    gpu_report.FUSED_NATIVE_DEVICE)
    assert slower["status"] == "NOT met" and "dw-big 1.17x" in slower["detail"], slower
    none = _check(gpu_report.ops_checks("float32", _records(None, None), 2, ceiling_gbps=CEILING),
                  gpu_report.FUSED_NATIVE_DEVICE)
    assert none["status"] == "n/a"
    cpu = [dict(r, device="cpu") for r in _records(50.0, 60.0)]
    assert _check(gpu_report.ops_checks("float32", cpu, 2), gpu_report.FUSED_NATIVE_DEVICE)["status"] == "n/a"


def test_report_adds_a_device_time_table_only_when_records_have_device_time(tmp_path):
    recs = _records(50.0, 60.0) + [_rec(BIG, "compiled", 500.0, 400.0)]   # compiled on BIG only
    gpu_report.add_bandwidth(recs, CEILING)
    path = tmp_path / "ops-h200.json"
    path.write_text(json.dumps(recs))
    ops_report.render(path)
    md = path.with_suffix(".md").read_text()
    assert "Device time per call (CUDA graph replay)" in md
    table = md.split("Device time per call (CUDA graph replay)")[1]
    header = next(line for line in table.splitlines() if line.startswith("| shape |"))
    cols = [c.strip() for c in header.split("|")]
    row = next(line for line in table.splitlines() if line.startswith("| dw-small |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[cols.index("fused")] == "3.0" and cells[cols.index("compiled")] == "-"
    big = [c.strip() for c in next(line for line in table.splitlines() if line.startswith("| dw-big |")).split("|")]
    assert big[cols.index("fused")] == "50.0"
    assert big[cols.index("fused copy %")] == f"{100 * recs[0]['device_copy_fraction']:.0f}%"
    path.write_text(json.dumps(_records(None, None)))
    ops_report.render(path)
    assert "Device time per call" not in path.with_suffix(".md").read_text()


def test_cpu_records_carry_the_device_keys_as_none():
    from benchmarks import ops
    recs = ops.bench_shape(SUITE[0], ["slice_sum", "native"], torch.float32, "cpu", {}, 0.01, 2, 4)
    assert all(r["device_us"] is None and r["device_copy_fraction"] is None for r in recs), recs


def test_graph_timing_off_cuda_raises_the_error_callers_turn_into_none():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(timing.GraphTimingError, match="CUDA"):
        timing.time_cuda_graph(lambda: None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_time_of_a_real_kernel_is_positive_and_at_most_its_wall_time():
    x = torch.randn(1 << 24, device="cuda")                                   # 64 MB: one kernel ~30 us
    fn = lambda: torch.mul(x, 2.0)                                            # noqa: E731
    t0 = time.perf_counter()
    dev = timing.time_cuda_graph(fn, inner=10, repeats=9)
    assert time.perf_counter() - t0 < 5.0
    wall = timing.time_fn(fn, device="cuda", budget_s=0.2)
    assert 0 < dev.median_us <= wall.median_us * 1.05, (dev, wall)
    assert dev.repeats == 9 and dev.inner == 10

    def syncs():                                                              # not capturable
        return torch.mul(x, 2.0).sum().item()
    with pytest.raises(timing.GraphTimingError, match="capture"):
        timing.time_cuda_graph(syncs)
    assert torch.mul(x, 2.0).sum().item() != 0                                # CUDA still usable
