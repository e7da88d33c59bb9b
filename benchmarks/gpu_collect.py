"""After a device call of benchmarks/gpu.sh: file the run's results where the repository keeps
them and say what issue 6 still misses (docs/GPU_RUN.md's "Reading what came back", as a script).

    python benchmarks/gpu_collect.py FETCHED [--also FETCHED2]... [--date YYYY-MM-DD] [--results DIR]

FETCHED: the folder the device tool put the call's files in (gpu-results.tar.gz with the logs
beside it), such a gpu-results.tar.gz, or a folder of results already unpacked.
1. Every file of the run goes to DIR/h200-<date>/ (default benchmarks/results/; the date today's,
   UTC, as the call was), unedited: the run is kept whatever it met, as the first one was; so do
   the files of --also folders (a second call's, gpu_launch.py's launch-h200.*). A folder that
   already holds files is another run's and is never written into: the next free
   h200-<date>-2, -3, ... is used. The logs' absolute paths (the device's packages and checkout,
   gpu.sh's scratch folder) are made relative.
2. Issue 6's acceptance list (benchmarks/gpu_acceptance.py) is read off the run's summary.
3. Only when nothing misses, the run's `*-h200.*` files are also copied to DIR's top level, the
   names tests/test_gpu_results.py holds to the list (a run that misses would fail CI there).
4. The float32 ops rows are printed as models/depthwise/auto.py's CUDA_MEASURED table
   (ops_report.auto_table), to re-derive the CUDA rule from.
Exit status: 0 when the run meets the list, 1 when it misses something, 2 on unusable input.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks.gpu_acceptance import h200_failures  # noqa: E402
from benchmarks.ops_report import auto_table  # noqa: E402

SUMMARY = "gpu-summary-h200.json"
# Machine paths in the logs, made relative as the first run's were by hand: the device's Python
# packages, the repository checkout there, gpu.sh's scratch folder.
_MACHINE_PATHS = ((re.compile(r"/[^\s:'\"]*/site-packages/"), "site-packages/"),
                  (re.compile(r"/[^\s:'\"]*?/(?=(?:benchmarks|models|service|tests)/)"), ""),
                  (re.compile(r"/tmp/dwserve-gpu\.\w+"), "<scratch folder>"))
TARBALL = "gpu-results.tar.gz"


def unpack(fetched: Path, into: Path) -> Path:
    """The folder holding the run's files: `fetched` itself, or its tarball unpacked into `into`
    (with the files lying beside the tarball, the logs, copied in too)."""
    tarball = fetched if fetched.is_file() else fetched / TARBALL
    if not tarball.is_file():
        return fetched
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and not Path(m.name).is_absolute()
                   and ".." not in Path(m.name).parts]
        for m in members:
            target = into / Path(m.name).name          # flat: gpu.sh packs one folder
            with tar.extractfile(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    for beside in tarball.parent.iterdir():
        if beside.is_file() and beside != tarball and not (into / beside.name).exists():
            shutil.copy2(beside, into / beside.name)
    return into


def relative_paths(text: str) -> str:
    """text with this machine's and the device's absolute paths made relative (_MACHINE_PATHS)."""
    for pattern, repl in _MACHINE_PATHS:
        text = pattern.sub(repl, text)
    return text


def _free_folder(results: Path, name: str) -> Path:
    """results/name, or results/name-2, -3, ...: the first that does not exist or is empty (two
    runs on one day must not overwrite each other's committed files)."""
    folder, n = results / name, 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = results / f"{name}-{n}"
    if folder.exists():
        folder.rmdir()                                   # empty: made again below
    return folder


def collect(fetched: Path, results: Path, date: str | None = None, also: tuple = ()) -> tuple[Path, list[str], str]:
    """-> (the dated folder, issue 6's misses, the CUDA_MEASURED rows). Raises ValueError when
    `fetched` holds no run summary."""
    with tempfile.TemporaryDirectory() as tmp:
        run = unpack(fetched, Path(tmp))
        if not (run / SUMMARY).is_file():
            raise ValueError(f"{fetched}: no {SUMMARY} (a gpu.sh call's files, or its {TARBALL}, expected)")
        summary = json.loads((run / SUMMARY).read_text())
        folder = _free_folder(results, f"h200-{date or datetime.now(timezone.utc).date().isoformat()}")
        folder.mkdir(parents=True)
        files = sorted(p for p in run.iterdir() if p.is_file())
        for p in files:
            shutil.copy2(p, folder / p.name)
    for extra in also:                                   # a second call's files, as they came
        for p in sorted(q for q in Path(extra).iterdir() if q.is_file()):
            shutil.copy2(p, folder / p.name)
    for log in folder.glob("*.log"):
        log.write_text(relative_paths(log.read_text()))
    names = {p.name for p in files}
    misses = h200_failures(summary, names)
    if not misses:
        for p in folder.iterdir():
            if "-h200" in p.name or p.name in ("gpu-tests.log", "gpu-run.log"):
                shutil.copy2(p, results / p.name)
    ops = folder / "ops-h200.json"
    table = auto_table(json.loads(ops.read_text())) if ops.is_file() else ""
    return folder, misses, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fetched", type=Path, help="the device call's files (folder or gpu-results.tar.gz)")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="another call's files folder, filed beside the run (e.g. gpu_launch.py's)")
    p.add_argument("--date", help="YYYY-MM-DD for the dated folder (default: today, UTC)")
    p.add_argument("--results", type=Path, default=_REPO / "benchmarks" / "results", help="results folder")
    args = p.parse_args(argv)
    try:
        folder, misses, table = collect(args.fetched, args.results, args.date, tuple(args.also))
    except ValueError as exc:
        print(f"gpu_collect: {exc}", file=sys.stderr)
        return 2
    print(f"the run's files: {folder}")
    if table:
        print("CUDA_MEASURED rows (models/depthwise/auto_measured.py) from its float32 ops:\n" + table)
    if misses:
        print(f"issue 6 NOT met ({len(misses)}): the top-level *-h200.* files were left alone\n  - "
              + "\n  - ".join(misses))
        return 1
    print(f"issue 6's list is met: the *-h200.* files are copied to {args.results}; run "
          "pytest tests/test_gpu_results.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
