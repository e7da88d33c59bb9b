"""benchmarks/gpu_collect.py on the first H200 run's real files (benchmarks/results/h200-2026-12-04/),
fetched as a folder and as gpu.sh's tarball with its logs beside it: the run is filed under a
dated folder, issue 6's misses are named, the top level is left alone for a run that misses and
filled for one that meets the list, and the CUDA_MEASURED rows come out."""
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from benchmarks import gpu_collect
from benchmarks.gpu_acceptance import DECODE, REQUIRED_CHECKS

FIRST_RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "h200-2026-12-04"


def _tarball(tmp_path, src: Path) -> Path:
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    with tarfile.open(fetched / gpu_collect.TARBALL, "w:gz") as tar:
        for p in src.iterdir():
            if p.name not in ("gpu-run.log", "NOTES.md"):
                tar.add(p, arcname=f"gpu-results/{p.name}")
    shutil.copy2(src / "gpu-run.log", fetched / "gpu-run.log")       # beside the tarball, as gpu.sh leaves it
    return fetched


@pytest.mark.parametrize("as_tarball", [False, True], ids=["folder", "tarball"])
def test_a_run_that_misses_is_filed_dated_and_named_but_not_committed_at_the_top(tmp_path, as_tarball, capsys):
    results, second = tmp_path / "results", tmp_path / "second-call"
    second.mkdir()
    (second / "launch-h200.json").write_text("{}")
    fetched = _tarball(tmp_path, FIRST_RUN) if as_tarball else FIRST_RUN
    assert gpu_collect.main([str(fetched), "--also", str(second), "--date", "2027-01-02",
                             "--results", str(results)]) == 1
    folder = results / "h200-2027-01-02"
    want = {p.name for p in FIRST_RUN.iterdir()} - ({"NOTES.md"} if as_tarball else set()) | {"launch-h200.json"}
    assert {p.name for p in folder.iterdir()} == want
    assert (folder / "ops-h200.json").read_bytes() == (FIRST_RUN / "ops-h200.json").read_bytes()
    assert not [p for p in results.iterdir() if p.is_file()]          # the top level untouched
    out = capsys.readouterr().out
    assert "issue 6 NOT met" in out and "[float32] seed: per_group / fused >= 1000x: NOT met" in out
    assert "'seed-c2048', 'conv1d', (1, 2048, 21)" in out                # a CUDA_MEASURED row


def test_a_run_that_meets_the_list_is_copied_to_the_top_level(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIRST_RUN, run)
    summary = json.loads((run / gpu_collect.SUMMARY).read_text())
    for c in summary["checks"]:
        if c["name"] in REQUIRED_CHECKS:
            c["status"] = "met"
    summary["checks"] = [c for c in summary["checks"] if c["status"] != "NOT met"]
    summary["decode"] = [{"preset": p, "batch": b, "variant": v, "generate_tokens_per_s": 1.0,
                          "kernels_per_token": 1, "error": None} for p, b in DECODE for v in ("before", "after")]
    (run / gpu_collect.SUMMARY).write_text(json.dumps(summary))
    results = tmp_path / "results"
    assert gpu_collect.main([str(run), "--date", "2027-01-03", "--results", str(results)]) == 0, capsys.readouterr().out
    top = {p.name for p in results.iterdir() if p.is_file()}
    assert {"ops-h200.json", "models-h200.png", gpu_collect.SUMMARY, "gpu-run.log"} <= top and "NOTES.md" not in top


def test_a_folder_without_a_run_summary_is_refused(tmp_path, capsys):
    assert gpu_collect.main([str(tmp_path), "--results", str(tmp_path / "r")]) == 2
    assert "no gpu-summary-h200.json" in capsys.readouterr().err


def test_a_second_run_on_the_same_day_gets_its_own_folder(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "h200-2027-01-04").mkdir(parents=True)
    (results / "h200-2027-01-04" / "ops-h200.json").write_text("the first run's")
    for _ in range(2):
        gpu_collect.main([str(FIRST_RUN), "--date", "2027-01-04", "--results", str(results)])
    assert (results / "h200-2027-01-04" / "ops-h200.json").read_text() == "the first run's"
    for second in ("h200-2027-01-04-2", "h200-2027-01-04-3"):
        assert (results / second / "ops-h200.json").read_bytes() == (FIRST_RUN / "ops-h200.json").read_bytes()
    assert "h200-2027-01-04-3" in capsys.readouterr().out


def test_the_filed_logs_name_no_machine_paths(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIRST_RUN, run)
    (run / "gpu-run.log").write_text(
        "/home/user/checkout/benchmarks/gpu_cases.py:111: UserWarning\n"
        "/opt/torch/.venv/lib/python3.12/site-packages/torch/profiler/profiler.py:224: x\n"
        "exit 0 (ok); results in /tmp/dwserve-gpu.SGw3QB\n")
    gpu_collect.main([str(run), "--date", "2027-01-05", "--results", str(tmp_path / "r")])
    assert (tmp_path / "r" / "h200-2027-01-05" / "gpu-run.log").read_text() == (
        "benchmarks/gpu_cases.py:111: UserWarning\n"
        "site-packages/torch/profiler/profiler.py:224: x\n"
        "exit 0 (ok); results in <scratch folder>\n")
