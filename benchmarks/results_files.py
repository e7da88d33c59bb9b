"""Where a benchmark's results go: `<out>/<stem>.json` beside its Markdown table (and its plot).

Every CPU benchmark writes the same trio, so the committed files under benchmarks/results/ keep
one form (JSON indented by one, ending in a newline) whichever script made them:

    md = write_results(out, "ops-cpu", records, write_markdown, plots.channel_sweep)
    print(md.read_text())

A run writes by default into LOCAL, benchmarks/results/local/ (git-ignored), never over the
committed, device-named files: those are (re)made only with an explicit `--out benchmarks/results`
(serve.py: `--out-dir`), which out_help() says in each --help.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

COMMITTED = Path(__file__).resolve().parent / "results"   # committed JSON + Markdown + PNG per device
LOCAL = COMMITTED / "local"                                   # a user's runs; in .gitignore


def out_help(flag: str = "--out") -> str:
    """The output flag's --help: where a run goes, and how to replace the committed files."""
    return (f"folder for the results (default benchmarks/results/local/, git-ignored); "
            f"{flag} benchmarks/results replaces the committed, device-named files there")


Writer = Callable[[Any, Path], object]     # (result, path) -> anything; writes the file at path


def write_results(out: Path | str, stem: str, result: Any, markdown: Writer,
                  plot: Optional[Writer] = None) -> Path:
    """Write out/stem.json, out/stem.md (and out/stem.png when `plot` is given), creating `out`;
    return the Markdown file's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    markdown(result, out / f"{stem}.md")
    if plot is not None:
        plot(result, out / f"{stem}.png")
    return out / f"{stem}.md"
