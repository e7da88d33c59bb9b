"""`dwserve bench NAME` argument checks: a bad number (0, negative, nan, inf, not a number), a bad
list or an --out that cannot be written is a one-line usage error, exit 2, before any work.
The functions that do the work (and write the results) are replaced by a tripwire, so a check
that is missing fails here at once instead of running a benchmark. host_overhead unsets
TRITON_INTERPRET when imported (it times real kernels), so it runs in a subprocess."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TRIPWIRES = {   # benchmark -> module attributes that build models, measure or write results
    "ops": ("bench_shape", "write_results"),
    "models": ("build_models", "write_results"),
    "prefill_chunks": ("build_model", "write_results"),
    "prefix_cache": ("build_model", "write_results"),
    "row_chunks": ("sweep", "write_results"),
    "block_decode": ("run", "write_results"),
    "sampling": ("measure", "write_results"),
    "prompt_scoring": ("measure", "write_results"),
    "serve": ("server", "write_results"),
    "generate": ("server", "write_results"),
}

CASES = [
    ("ops", ["--quick", "--budget-s", "-1"], "--budget-s"),
    ("ops", ["--quick", "--budget-s", "nan"], "--budget-s"),
    ("ops", ["--quick", "--budget-s", "0"], "--budget-s"),
    ("ops", ["--quick", "--threads", "-3"], "--threads"),
    ("ops", ["--quick", "--impls", "bogus"], "--impls"),
    ("ops", ["--render", "no/such/ops-cpu.json"], "--render"),
    ("models", ["--quick", "--budget-s", "inf"], "--budget-s"),
    ("models", ["--quick", "--share-runs", "0"], "--share-runs"),
    ("models", ["--quick", "--threads", "0"], "--threads"),
    ("prefill_chunks", ["--chunks", "x"], "--chunks"),
    ("prefill_chunks", ["--chunks", "0,-128"], "--chunks"),
    ("prefill_chunks", ["--live", "0"], "--live"),
    ("prefill_chunks", ["--rounds", "-1"], "--rounds"),
    ("prefix_cache", ["--requests", "-1"], "--requests"),
    ("prefix_cache", ["--system-tokens", "0"], "--system-tokens"),
    ("row_chunks", ["--budget-s", "nan"], "--budget-s"),
    ("block_decode", ["--tokens", "0"], "--tokens"),
    ("block_decode", ["--rounds", "0"], "--rounds"),
    ("sampling", ["--budget-s", "0"], "--budget-s"),
    ("prompt_scoring", ["--prompts", "0"], "--prompts"),
    ("prompt_scoring", ["--lengths", "-5"], "--lengths"),
    ("prompt_scoring", ["--budget-s", "1e999"], "--budget-s"),
    ("serve", ["--duration", "-1"], "--duration"),
    ("serve", ["--clients", "0"], "--clients"),
    ("serve", ["--impl-budget", "nan"], "--impl-budget"),
    ("serve", ["--warmup", "-1"], "--warmup"),
    ("generate", ["--duration", "0"], "--duration"),
    ("generate", ["--rounds", "0"], "--rounds"),
    ("generate", ["--new-tokens", "-5"], "--new-tokens"),
    ("generate", ["--max-decode-batch", "x"], "--max-decode-batch"),
]
OUT_CASES = sorted(TRIPWIRES)


def _main(name, monkeypatch):
    mod = importlib.import_module(f"benchmarks.{name}")

    def tripwire(*args, **kwargs):
        raise AssertionError(f"bench {name} started work despite a bad argument")
    for attr in TRIPWIRES[name]:
        monkeypatch.setattr(mod, attr, tripwire)
    return mod.main


def _usage_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("name,argv,flag", [pytest.param(*c, id=f"{c[0]}{''.join(c[1])}") for c in CASES])
def test_bad_value_is_a_usage_error(name, argv, flag, monkeypatch, capsys):
    line = _usage_error(_main(name, monkeypatch), argv, capsys)
    assert f"dwserve bench {name}: error:" in line and flag in line, line


@pytest.mark.parametrize("name", OUT_CASES)
def test_out_that_is_a_file_is_a_usage_error(name, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    flag = "--out-dir" if name == "serve" else "--out"
    argv = [flag, str(blocker / "results")] + (["--quick"] if name in ("ops", "models") else [])
    line = _usage_error(_main(name, monkeypatch), argv, capsys)
    assert flag in line and "writable folder" in line, line


@pytest.mark.parametrize("argv", [pytest.param(["--budget-s", "-1"], id="budget"),
                                  pytest.param(["--budget-s", "0.01", "--out", "FILE/results"], id="out")])
def test_host_overhead_bad_argument_is_a_usage_error(argv, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = [a.replace("FILE", str(blocker)) for a in argv]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "host_overhead.py"), *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "dwserve bench host_overhead: error:" in proc.stderr.strip().splitlines()[-1], proc.stderr
