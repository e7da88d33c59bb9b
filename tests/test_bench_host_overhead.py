"""benchmarks/host_overhead.py runs without a GPU and reports every launch path per case (what
it measures is read from the committed results, not asserted here: timing is a benchmark's job)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[1]


def test_quick_run_writes_every_path_for_every_case(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "host_overhead.py"), "--budget-s", "0.3",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "host-overhead-cpu.json").read_text())
    pairs = {(r["case"], r["path"]) for r in result["records"]}
    cases = {c for c, _ in pairs}
    paths = ("autotuner", "launch_tuned", "direct", "planned", "planned_pycall")
    assert len(cases) == 5 and pairs == {(c, p) for c in cases for p in paths}
    assert all(r["median_us"] > 0 and r["timing"]["repeats"] >= 20 for r in result["records"])
    md = (tmp_path / "host-overhead-cpu.md").read_text()
    assert "| seed-1x2048x21-f32 |" in md and "| direct us | planned us | planned, launcher __call__ us |" in md


def test_committed_result_shows_launch_tuned_and_plans_saving_host_time():
    """launch_tuned saves on the autotuned conv kernels (the block and the decode step have no
    autotuner: the same path twice); a Plan saves on every kernel against the direct Launcher, and
    calling the launcher's C function saves against its Python __call__."""
    result = json.loads((REPO / "benchmarks" / "results" / "host-overhead-cpu.json").read_text())
    by = {}
    for r in result["records"]:
        by.setdefault(r["case"], {})[r["path"]] = r["median_us"]
    assert set(by) >= {"seed-1x2048x21-f32", "lfm2-block-1x128x1024-bf16", "decode-16x2048-bf16"}
    for case, d in by.items():
        if not case.startswith(("lfm2-block", "decode")):
            assert d["launch_tuned"] < d["autotuner"], (case, d)
        assert d["planned"] < d["direct"], (case, d)
        assert d["planned"] < d["planned_pycall"], (case, d)     # the C function past the launcher's __call__
