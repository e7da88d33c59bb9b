"""benchmarks/prefill_chunks.py: a quick run end to end, and the committed CPU result (chunked
prefill must bound the live streams' worst gap between tokens, at little throughput cost)."""
import json
from pathlib import Path

import pytest

from benchmarks import prefill_chunks

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "prefill-chunks-cpu.json"


def test_quick_run_writes_both_chunk_sizes(tmp_path):
    assert prefill_chunks.main(["--quick", "--chunks", "0,16", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "prefill-chunks-cpu-quick.json").read_text())
    assert set(res["chunks"]) == {"0", "16"}
    for r in res["chunks"].values():
        assert r["steps"] == 2 * 4 and r["long_prompts"] == 2       # cycles x every, one TTFT per cycle
        assert 0 < r["gap_p50_ms"] <= r["gap_p99_ms"] <= r["gap_max_ms"] and r["live_tokens_per_s"] > 0
    md = (tmp_path / "prefill-chunks-cpu-quick.md").read_text()
    assert "| whole prompt |" in md and "| 16 tokens |" in md


@pytest.mark.skipif(not RESULTS.exists(), reason="no committed prefill-chunks-cpu.json")
def test_committed_cpu_result_bounds_the_gap():
    res = json.loads(RESULTS.read_text())
    whole, chunked = res["chunks"]["0"], res["chunks"]["256"]              # 256: the service default
    assert res["args"]["long_tokens"] >= 1024 and res["args"]["live"] >= 8
    assert chunked["gap_max_ms"] < 0.5 * whole["gap_max_ms"]
    assert chunked["live_tokens_per_s"] > 0.9 * whole["live_tokens_per_s"]
    from service.settings import Settings
    assert Settings().prefill_chunk_tokens == 256
