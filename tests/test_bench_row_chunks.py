"""benchmarks/row_chunks.py: a smoke run of the script, and the committed CPU sweep backing
models/row_chunks.py's default budget."""
import json
from pathlib import Path

import pytest

from models.row_chunks import CPU_ROW_CHUNK_BYTES

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_quick_run_writes_json_and_markdown(tmp_path):
    from benchmarks.row_chunks import main
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "row-chunks-cpu-quick.json").read_text())
    names = [r["name"] for r in result["records"]]
    assert names == ["batch1", "batch2/budget0MiB", "batch2/budget8MiB"]
    # >= 3: time_interleaved's floor when 5 samples of the slowest case would take over twice the
    # budget, as on a loaded machine (5 is what it asks for)
    assert all(r["per_row_ms"] > 0 and r["timing"]["repeats"] >= 3 for r in result["records"])
    assert len(result["stage_row_bytes"]) == 19 and result["environment"]["device"] == "cpu"
    assert "| 2 | 8 |" in (tmp_path / "row-chunks-cpu-quick.md").read_text()


@pytest.fixture(scope="module")
def committed():
    return json.loads((RESULTS / "row-chunks-cpu.json").read_text())


def test_committed_default_budget_is_the_one_in_code(committed):
    assert committed["default_budget_mib"] == CPU_ROW_CHUNK_BYTES >> 20
    assert committed["image_size"] == 224 and not committed["quick"]


def test_committed_default_budget_within_5_percent_of_best_and_beats_whole_batches(committed):
    default = CPU_ROW_CHUNK_BYTES >> 20
    for batch in {r["batch"] for r in committed["records"] if r["batch"] > 1}:
        rows = {r["budget_mib"]: r["per_row_ms"] for r in committed["records"] if r["batch"] == batch}
        best = min(v for k, v in rows.items() if k)
        assert rows[default] <= 1.05 * best, (batch, rows)
        assert rows[default] < 0.8 * rows[0], (batch, rows)       # chunks beat whole batches
