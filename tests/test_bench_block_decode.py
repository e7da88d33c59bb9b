"""benchmarks/block_decode.py end to end on a few tokens (its files and fields), and the
committed run (benchmarks/results/block-decode-cpu.json) read against what it claims: the
one-token window path is fewer ops whatever K, and faster in the model and alone."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks" / "results" / "block-decode-cpu.json"


def _by(result: dict) -> dict:
    return {(r["preset"], r["variant"]): r for r in result["rows"]}


def test_runs_and_writes_both_variants_for_both_presets(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["block_decode.py"])
    from benchmarks import block_decode
    from models.depthwise import short_conv
    assert block_decode.main(["--tokens", "3", "--rounds", "1", "--out", str(tmp_path)]) == 0
    assert short_conv.ONE_TOKEN_WINDOW is True          # restored for everything after it
    result = json.loads((tmp_path / "block-decode-cpu.json").read_text())
    by = _by(result)
    assert set(by) == {(p, v) for p in ("lfm2-demo", "lfm3-demo") for v in ("window", "tap_loop")}
    assert [by[("lfm2-demo", "window")]["K"], by[("lfm3-demo", "window")]["K"]] == [3, 7]
    # (tokens - 1) one-token steps (the first token comes from the prefill) x conv layers (5, 4)
    assert all(r["calls"] == 2 * (5 if r["K"] == 3 else 4) for r in result["rows"])
    assert by[("lfm3-demo", "window")]["aten_ops"] == by[("lfm2-demo", "window")]["aten_ops"]
    assert by[("lfm3-demo", "tap_loop")]["aten_ops"] > by[("lfm2-demo", "tap_loop")]["aten_ops"]
    assert "| lfm3-demo | 7 | window |" in (tmp_path / "block-decode-cpu.md").read_text()


def test_committed_run_window_beats_the_tap_loop():
    if not COMMITTED.is_file():
        pytest.fail(f"{COMMITTED} missing: run `python benchmarks/block_decode.py` and commit it")
    result = json.loads(COMMITTED.read_text())
    by = _by(result)
    assert result["environment"]["device"] == "cpu" and result["settings"]["rounds"] >= 5
    for preset, best_ratio in (("lfm2-demo", 1.0), ("lfm3-demo", 0.9)):
        window, loop = by[(preset, "window")], by[(preset, "tap_loop")]
        assert window["aten_ops"] < loop["aten_ops"] and window["warm_us"] < loop["warm_us"], preset
        assert window["in_model_us"] / loop["in_model_us"] <= best_ratio, preset
        assert window["in_model_us"] > 2 * window["warm_us"], preset   # the cold-dispatch cost it reports
