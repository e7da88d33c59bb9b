"""A benchmark run never overwrites the committed, device-named results unless asked.

Every `dwserve bench NAME` (and benchmarks/gpu.py, gpu.sh, `make bench`) writes by default into
a git-ignored scratch folder; benchmarks/results/ itself takes an explicit `--out
benchmarks/results` (serve: `--out-dir`), which each --help says. Before, every default was
benchmarks/results/ under the committed names (ops-cpu.json, ...), so `make bench` replaced
the EPYC's numbers with the user's and tests/test_auto.py failed. Nothing is measured here:
the parsers' defaults are read by stopping each main() at parse_args.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import BENCHMARKS

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks" / "results"
SCRIPTS = (*BENCHMARKS, "gpu")

# One subprocess for all scripts: ptx.py and host_overhead.py unset TRITON_INTERPRET on import.
_PROBE = r"""
import argparse, json, runpy, sys
sys.path.insert(0, sys.argv[1])

class Stop(Exception):
    pass

def parse_args(self, args=None, namespace=None):
    outs = [a for a in self._actions if a.dest in ("out", "out_dir")]
    raise Stop({"flags": [o for a in outs for o in a.option_strings],
                "default": [None if a.default is None else str(a.default) for a in outs],
                "help": [a.help or "" for a in outs]})

argparse.ArgumentParser.parse_args = parse_args
found = {}
for name in sys.argv[2:]:
    module = runpy.run_path(f"{sys.argv[1]}/benchmarks/{name}.py", run_name=f"benchmarks.{name}")
    try:
        module["main"]([])
    except Stop as stop:
        found[name] = stop.args[0]
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def outs():
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(REPO), *SCRIPTS], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _resolved(path: str) -> Path:
    p = Path(path)
    return (p if p.is_absolute() else REPO / p).resolve()


def _ignored(path: Path) -> bool:
    """git would not track a file written there (committed files are never ignored)."""
    probe = path / "ops-cpu.json"
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", str(probe.relative_to(REPO))],
                          cwd=REPO).returncode == 0


@pytest.mark.parametrize("name", SCRIPTS)
def test_default_output_is_a_git_ignored_scratch_folder(outs, name):
    assert name in outs, f"benchmarks/{name}.py's main() never parsed its arguments"
    found = outs[name]
    assert len(found["default"]) == 1, f"{name}: expected one --out/--out-dir, got {found['flags']}"
    default = found["default"][0]
    assert default is not None, f"{name}: {found['flags'][0]} has no default"
    where = _resolved(default)
    assert where != COMMITTED, f"{name}: writes into the committed benchmarks/results/ by default"
    assert REPO in where.parents, f"{name}: default output {where} is outside the checkout"
    if shutil.which("git") and (REPO / ".git").exists():
        assert _ignored(where), f"{name}: default output {where.relative_to(REPO)} is not git-ignored"


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_says_how_to_write_the_committed_results(outs, name):
    flag, help_text = outs[name]["flags"][0], outs[name]["help"][0]
    assert f"{flag} benchmarks/results" in " ".join(help_text.split()), f"{name}: {flag}'s help: {help_text!r}"


def test_gpu_sh_falls_back_to_the_scratch_folder():
    """On the device $OUT is set (the tool's result folder); elsewhere gpu.sh uses gpu.py's default."""
    text = (REPO / "benchmarks" / "gpu.sh").read_text()
    assert '"${OUT:-}"' in text, "gpu.sh no longer reads $OUT"
    fallbacks = re.findall(r'^\s*out="(\$root/[^"]*)"', text, flags=re.M)
    assert fallbacks, "gpu.sh has no folder for runs without $OUT"
    for f in fallbacks:
        where = _resolved(f.replace("$root", str(REPO)))
        assert where != COMMITTED and COMMITTED in where.parents, f


def test_make_bench_writes_to_the_scratch_folder():
    if not shutil.which("make"):
        pytest.skip("no make")
    proc = subprocess.run(["make", "-n", "bench"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if "dwserve bench" in line]
    assert runs, proc.stdout
    for line in runs:
        out = re.search(r"--out(?:-dir)?[ =](\S+)", line)
        assert out and _resolved(out.group(1)) != COMMITTED and _ignored(_resolved(out.group(1))), line
    assert re.search(r"echo .*benchmarks/results/local", proc.stdout), "make bench does not say where it wrote"


def test_auto_table_still_reads_the_committed_results(capsys):
    """`--auto-table` reads, not writes: it stays on the committed ops-cpu.json (docs/GPU_RUN.md)."""
    sys.path.insert(0, str(REPO))
    from benchmarks import ops
    assert ops.main(["--auto-table"]) == 0
    expected = ops.auto_table(json.loads((COMMITTED / "ops-cpu.json").read_text()))
    assert capsys.readouterr().out.strip() == expected.strip()


def test_auto_table_reads_a_file_named_with_a_folder(tmp_path, monkeypatch, capsys):
    """`./ops-x.json` is that file, not a committed one of that name; a missing file is a usage
    error naming it, not a traceback."""
    sys.path.insert(0, str(REPO))
    from benchmarks import ops
    records = json.loads((COMMITTED / "ops-cpu.json").read_text())
    (tmp_path / "ops-x.json").write_text(json.dumps(records[:3]))
    monkeypatch.chdir(tmp_path)
    assert ops.main(["--auto-table", "./ops-x.json"]) == 0
    assert capsys.readouterr().out.strip() == ops.auto_table(records[:3]).strip()
    with pytest.raises(SystemExit) as exc:
        ops.main(["--auto-table", "ops-missing.json"])
    assert exc.value.code == 2 and "ops-missing.json" in capsys.readouterr().err


def test_dwserve_bench_usage_says_where_results_go(capsys):
    from service import cli
    assert cli.main(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "benchmarks/results/local/" in out and "--out benchmarks/results" in out, out
