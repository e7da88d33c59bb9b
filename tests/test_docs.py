"""docs/ARCHITECTURE.md's file map names every module of `models` and `service`, so it cannot
drift behind the code: a new file without a line there fails here, naming it."""
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _file_map() -> list[str]:
    """The path tokens of the `## Files` code block (the first word of each line, split at
    commas: `benchmarks/ops.py, models.py` names benchmarks/models.py too)."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## Files\n```\n", 1)[1].split("```", 1)[0]
    paths = []
    for line in block.splitlines():
        if not line or line[0].isspace():
            continue                                    # a description's continuation
        head = line.split("  ", 1)[0]                   # the path column ends at two spaces
        first, *rest = [p.strip() for p in head.split(",")]
        paths.append(first)
        paths += [str(Path(first).parent / p) for p in rest if p]
    return paths


def test_file_map_names_every_models_and_service_module():
    mapped = _file_map()
    files = sorted(str(p.relative_to(REPO)) for pkg in ("models", "service") for p in (REPO / pkg).rglob("*.py"))
    missing = [f for f in files if not any(f == m or fnmatch(f, m) for m in mapped)]
    assert not missing, f"docs/ARCHITECTURE.md's file map lacks: {missing}"


def test_file_map_names_no_missing_file():
    gone = [m for m in _file_map() if not any(REPO.glob(m))]
    assert not gone, f"docs/ARCHITECTURE.md's file map names files that do not exist: {gone}"
