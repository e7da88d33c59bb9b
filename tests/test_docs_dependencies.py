"""README.md's "Dependencies and what each is for" against pyproject.toml and the code: the table
names exactly the declared packages, and every third-party package the code imports (models,
service, benchmarks, tests, deploy, docker; `pytest.importorskip` included) is declared or, when
it comes with a declared one, named in the table (starlette and pydantic-core were imported
directly and named nowhere). A declared package nothing imports is used some other way, which
NOT_IMPORTED says and checks."""
import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("models", "service", "benchmarks", "tests", "deploy", "docker")
# Declared, never imported: (file, text) showing the use.
NOT_IMPORTED = {
    "uvloop": ("service/cli.py", "uvicorn.Config("),               # uvicorn's loop="auto" takes it
    "httptools": ("service/http_protocol.py", "HttpToolsProtocol"),  # uvicorn's parser, subclassed there
    "python-multipart": ("service/routes_v1.py", "UploadFile"),     # FastAPI parses /v1/classify's form with it
    "pytest-timeout": ("pyproject.toml", "timeout = "),             # a pytest plugin: the ini option
    "schemathesis": ("tests/test_service_server.py", "schemathesis"),  # its CLI, run by a test
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib")                # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_norm(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in reqs}


def _table() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text().split("## Dependencies and what each is for", 1)[1].split("\n## ", 1)[0]
    return [(row[0].strip(), row[1].strip()) for line in text.splitlines() if line.startswith("| ")
            and (row := line.strip("|").split("|", 1)) and not set(row[0].strip()) <= set("-") and row[0].strip() != "package"]


def _table_packages() -> set[str]:
    names = set()
    for cell, _ in _table():
        cell = re.sub(r"\((?!\+)[^)]*\)", "", cell).replace("(+", ",").replace(")", "")   # (extra `gpu`), (>=2.4,<2.14)
        names |= {_norm(re.sub(r"\[.*?\]", "", n).strip()) for n in cell.split(",") if n.strip()}
    return names


def _imported() -> dict[str, str]:
    """{top-level module: a file importing it} for every third-party import."""
    # the packages, and the scripts and test helpers imported by bare name from their folder
    local = set(SOURCES) | {p.stem for d in ("tests", "benchmarks", "deploy", "docker") for p in (REPO / d).rglob("*.py")}
    out = {}
    for d in SOURCES:
        for f in sorted((REPO / d).rglob("*.py")):
            text = f.read_text()
            names = re.findall(r"importorskip\(\"([A-Za-z0-9_.]+)\"", text)
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Import):
                    names += [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.append(node.module)
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    out.setdefault(top, str(f.relative_to(REPO)))
    return out


def test_the_table_names_exactly_the_declared_packages():
    declared, listed = _declared(), _table_packages()
    assert not declared - listed, f"declared in pyproject.toml, not in README's table: {sorted(declared - listed)}"
    assert not listed - declared, f"in README's table, not declared in pyproject.toml: {sorted(listed - declared)}"


def test_every_imported_package_is_declared_or_named():
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    table_text = " ".join(f"{a} {b}" for a, b in _table()).lower()
    unknown = []
    for module, where in sorted(_imported().items()):
        names = {_norm(d) for d in dists.get(module, [module])}
        if not names & declared and not any(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(n), table_text) for n in names):
            unknown.append((module, sorted(names), where))
    assert not unknown, f"imported, neither declared nor named in README's table (module, dists, a file): {unknown}"


def test_every_declared_package_is_used():
    dists = importlib.metadata.packages_distributions()
    imported = {_norm(d) for module in _imported() for d in dists.get(module, [module])}
    unused = sorted(p for p in _declared() - imported if p not in NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml, imported nowhere (or say how in NOT_IMPORTED): {unused}"
    for package, (path, text) in NOT_IMPORTED.items():
        assert text in (REPO / path).read_text(), f"{package}: {path} no longer has {text!r}"
