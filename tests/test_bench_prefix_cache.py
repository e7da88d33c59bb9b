"""benchmarks/prefix_cache.py: a quick run end to end, and the committed CPU result (requests
sharing a system prompt restore it instead of prefilling it, and get their first token sooner)."""
import json
from pathlib import Path

import pytest

from benchmarks import prefix_cache

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "prefix-cache-cpu.json"


def test_quick_run_restores_the_shared_prefix(tmp_path):
    assert prefix_cache.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "prefix-cache-cpu-quick.json").read_text())
    off, on = res["uncached"], res["cached"]
    assert off["requests"] == on["requests"] == 3 and off["restored_tokens_mean"] == 0
    # 130-token system prompt: after the first request, each restores its first 128 tokens
    assert on["restored_tokens_mean"] == pytest.approx(128 * 2 / 3)
    for r in (off, on):
        assert 0 < r["gap_p50_ms"] <= r["gap_p99_ms"] and r["live_tokens_per_s"] > 0 and r["ttft_median_ms"] > 0
    md = (tmp_path / "prefix-cache-cpu-quick.md").read_text()
    assert "| off |" in md and "| on |" in md and "shorter" in md


@pytest.mark.skipif(not RESULTS.exists(), reason="no committed prefix-cache-cpu.json")
def test_committed_cpu_result():
    res = json.loads(RESULTS.read_text())
    off, on, a = res["uncached"], res["cached"], res["args"]
    assert a["system_tokens"] >= 512 and a["live"] >= 4
    assert on["restored_tokens_mean"] >= 0.8 * (a["system_tokens"] // 64 * 64)
    assert on["ttft_after_first_median_ms"] < 0.5 * off["ttft_after_first_median_ms"]
    from service.settings import Settings
    assert Settings().prefix_cache_mib > 0          # on by default in the service
