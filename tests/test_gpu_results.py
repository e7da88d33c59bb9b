"""Issue 6's acceptance, read from committed H200 results (benchmarks/results/*-h200.*).

These read numbers, they do not measure. The results come from one device call,
`bash benchmarks/gpu.sh` on an H200, whose files are committed under benchmarks/results/.
Until they are, the check on them skips (no GPU has run this code); `h200_failures`
(benchmarks/gpu_acceptance.py), which encodes the acceptance list, is tested on synthetic summaries either way.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gpu_acceptance import DECODE, FILES, REQUIRED_CHECKS, h200_failures

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SUMMARY = RESULTS / "gpu-summary-h200.json"
def _synthetic() -> tuple[dict, set[str]]:
    checks = [{"name": n, "status": "met", "detail": ""} for n in REQUIRED_CHECKS]
    rows = [{"preset": p, "batch": b, "variant": v, "generate_tokens_per_s": 100.0, "kernels_per_token": 50,
             "error": None} for p, b in DECODE for v in ("before", "after")]
    env = {"device_name": "NVIDIA H200", "gpu_driver": "580", "torch": "2.11", "triton": "3.6", "cuda": "13.0"}
    return {"environment": env, "checks": checks, "decode": rows}, set(FILES)


def test_the_acceptance_reader_passes_a_complete_summary_and_names_each_miss():
    summary, files = _synthetic()
    assert h200_failures(summary, files) == []
    summary["checks"][2]["status"] = "NOT met"
    summary["decode"] = [r for r in summary["decode"] if (r["preset"], r["batch"]) != ("lfm2-350m", 16)]
    summary["environment"]["device_name"] = "NVIDIA A100"
    got = h200_failures(summary, files - {"ops-h200.png"})
    assert got == ["not an H200: 'NVIDIA A100'", "missing ops-h200.png",
                   "[float32] seed: per_group / fused >= 1000x: NOT met",
                   "decode lfm2-350m b16 before: tokens/s or kernels per token not measured",
                   "decode lfm2-350m b16 after: tokens/s or kernels per token not measured"]


@pytest.mark.skipif(not SUMMARY.is_file(), reason="no committed H200 results yet: issue 6 needs "
                    "`bash benchmarks/gpu.sh` on an H200 and its files under benchmarks/results/")
def test_committed_h200_results_meet_issue_6():
    summary = json.loads(SUMMARY.read_text())
    assert h200_failures(summary, {p.name for p in RESULTS.iterdir()}) == []
