"""benchmarks/sampling.py: a quick run writes every path for every case (what it measures is
read from the committed results: the inverse-CDF draw beats torch.multinomial's, and the
step's rows sampled together beat them one by one)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_run_writes_every_path_for_every_case(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sampling.py"), "--budget-s", "0.05",
                           "--vocabs", "lfm2-demo", "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads((tmp_path / "sampling-cpu.json").read_text())["records"]
    cases = {(r["rows"], r["sampling"]) for r in records}
    assert cases == {(n, s) for n in (1, 16) for s in ("recommended", "nucleus")}
    assert {(r["rows"], r["sampling"], r["path"]) for r in records} == \
        {(*c, p) for c in cases for p in ("greedy", "before", "inverse_cdf", "now")}
    assert all(r["median_us"] > 0 for r in records)
    assert "| lfm2-demo (264) | 16 | recommended |" in (tmp_path / "sampling-cpu.md").read_text()


def test_committed_result_shows_sampling_faster_at_lfm2s_vocabulary():
    """16 rows: at 65536 tokens the inverse-CDF draw beats torch.multinomial's, and the rows
    sampled together (top_p among candidates) beat them one by one at both vocabularies."""
    records = json.loads((REPO / "benchmarks" / "results" / "sampling-cpu.json").read_text())["records"]
    by = {(r["vocab_size"], r["rows"], r["sampling"], r["path"]): r["median_us"] for r in records}
    for sampling in ("recommended", "nucleus"):
        assert by[(65536, 16, sampling, "inverse_cdf")] < by[(65536, 16, sampling, "before")], sampling
        for vocab in (264, 65536):          # the rows together beat them one by one
            assert by[(vocab, 16, sampling, "now")] < by[(vocab, 16, sampling, "inverse_cdf")], (vocab, sampling)
