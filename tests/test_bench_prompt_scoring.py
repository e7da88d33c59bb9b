"""benchmarks/prompt_scoring.py: a quick run writes both paths for every case; the committed
result shows the prompts scored together beat one forward per prompt where prompts are short,
and are not slower where they are long."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_run_writes_both_paths_for_every_case(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "prompt_scoring.py"), "--budget-s", "0.05",
                           "--prompts", "2", "3", "--lengths", "8", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads((tmp_path / "prompt-scoring-cpu.json").read_text())["records"]
    assert {(r["prompts"], r["max_length"], r["path"]) for r in records} == \
        {(p, 8, path) for p in (2, 3) for path in ("per_prompt", "together")}
    assert all(r["median_ms"] > 0 and r["tokens"] >= r["prompts"] * 4 for r in records)
    assert "| 3 | 4-8 |" in (tmp_path / "prompt-scoring-cpu.md").read_text()


def test_committed_result_shows_batched_scoring_faster_on_short_prompts():
    result = json.loads((REPO / "benchmarks" / "results" / "prompt-scoring-cpu.json").read_text())
    by = {(r["prompts"], r["max_length"], r["path"]): r["median_ms"] for r in result["records"]}
    cases = {(p, length) for p, length, _ in by}
    assert {(p, length) for p in (8, 32) for length in (32, 128, 512)} <= cases
    for p in (8, 32):
        assert by[(p, 32, "per_prompt")] > 1.5 * by[(p, 32, "together")], p      # short prompts: >1.5x
        for length in (128, 512):
            assert by[(p, length, "together")] < 1.1 * by[(p, length, "per_prompt")], (p, length)   # never 10% slower
