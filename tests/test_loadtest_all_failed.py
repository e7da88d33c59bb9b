"""A load test where every request failed: its report said "p50 nan ms" and nan in every
latency column, which read like a measurement. Now a dash; the exit status is unchanged
(failures() already fails such a run: tests/test_loadtest_error_gate.py)."""
from argparse import Namespace

import pytest

from service.loadtest import Phase
from service.loadtest_report import failures, write_report
from service.loadtest_targets import Target

pytest.importorskip("matplotlib")


def _phases():
    ok = Phase(Target("before", "http://127.0.0.1:1"), seconds=1.0, ok_share=2.0, latencies=[0.010, 0.020],
               statuses={"200": 2})
    failed = Phase(Target("after", "http://127.0.0.1:1"), seconds=1.0, statuses={"503": 5})
    return ok, failed


def test_an_all_failed_phase_reports_a_dash_not_nan(tmp_path):
    ok, failed = _phases()
    assert failed.ms(50) == "-" and ok.ms(50) == "15.0"
    args = Namespace(model="mobilenet_v2", tokens=8, new_tokens=4, concurrency=1, duration=1.0, rounds=1,
                     warmup=0.0, max_error_ratio=0.0, argv=["--duration", "1"])
    write_report([ok, failed], args, tmp_path / "report")
    text = (tmp_path / "report.md").read_text()
    assert "nan" not in text.lower(), text
    row = next(line for line in text.splitlines() if line.startswith("| after |"))
    assert [c.strip() for c in row.split("|")].count("-") == 5, row   # p50, p90, p95, p99, speed-up
    assert failures([ok, failed], 0.0), "an all-failed phase must still fail the run"
