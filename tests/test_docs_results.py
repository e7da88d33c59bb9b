"""README.md's Results say which CPU each committed result file comes from: "an AMD EPYC
(ops-cpu, ...) and an Intel Xeon (ops-cpu-xeon, ...)", and "serve-cpu names none". A benchmark
re-run on the other box rewrites its file's CPU and leaves that sentence behind (host-overhead-cpu
was re-measured on the AMD EPYC while the README still put it on the Intel Xeon), so the sentence
is checked against the files: each listed stem's JSON and Markdown name that CPU, and every
committed *-cpu* result is listed."""
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CPU_KEYS = ("cpu", "cpu_model", "machine")      # what the benchmarks name the CPU in


def _readme_groups() -> dict[str, list[str]]:
    """{"AMD EPYC": [stems], "Intel Xeon": [stems], "none": [stems]} from the Results header."""
    text = " ".join((REPO / "README.md").read_text().split("## Results", 1)[1].split("\n- **", 1)[0].split())
    groups = {cpu: [s.strip() for s in stems.split(",")]
              for cpu, stems in re.findall(r"an (AMD EPYC|Intel Xeon) \(([^)]*)\)", text)}
    groups["none"] = re.findall(r"([a-z0-9-]+) names none", text)
    return groups


def _cpu_named(obj, depth=0):
    """The first CPU-naming value in a result JSON (a record list, or a dict with nested parts)."""
    if depth > 3:
        return None
    if isinstance(obj, list):
        return _cpu_named(obj[0], depth + 1) if obj else None
    if isinstance(obj, dict):
        for key in CPU_KEYS:
            if isinstance(obj.get(key), str):
                return obj[key]
        for value in obj.values():
            if isinstance(value, (dict, list)) and (found := _cpu_named(value, depth + 1)):
                return found
    return None


def _words(cpu: str) -> tuple[str, ...]:
    return ("AMD EPYC",) if cpu == "AMD EPYC" else ("Intel", "Xeon")


def test_results_header_lists_groups():
    groups = _readme_groups()
    assert set(groups) == {"AMD EPYC", "Intel Xeon", "none"} and all(groups.values()), groups


def test_each_listed_result_names_the_cpu_the_readme_gives_it():
    wrong = []
    for cpu, stems in _readme_groups().items():
        if cpu == "none":
            continue
        for stem in stems:
            named = _cpu_named(json.loads((RESULTS / f"{stem}.json").read_text())) or ""
            header = (RESULTS / f"{stem}.md").read_text().split("\n|", 1)[0]
            if not all(w in named for w in _words(cpu)) or not all(w in header for w in _words(cpu)):
                wrong.append((stem, cpu, named))
    assert not wrong, f"(result, README's CPU, the JSON's): {wrong}"


def test_results_the_readme_says_name_no_cpu_name_none():
    for stem in _readme_groups()["none"]:
        assert _cpu_named(json.loads((RESULTS / f"{stem}.json").read_text())) is None, stem


def test_every_committed_cpu_result_is_in_a_group():
    listed = {s for stems in _readme_groups().values() for s in stems}
    files = {p.stem for p in RESULTS.glob("*-cpu*.json")}
    assert not files - listed, f"committed CPU results README.md's Results do not place on a CPU: {sorted(files - listed)}"
    assert not listed - files, f"README.md's Results list files that are not committed: {sorted(listed - files)}"
