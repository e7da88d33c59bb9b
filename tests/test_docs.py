"""The docs' mechanically checkable claims against the code, so they cannot drift behind it:
docs/ARCHITECTURE.md's file map names every module of `models`, `service` and `benchmarks`
(a new file without a line there fails here, naming it) and no file that is gone; the flags,
stated defaults, DWSERVE_ variables, `dwserve bench` names, endpoints, test files and metric
names that README.md, docs/ARCHITECTURE.md and docs/GPU_RUN.md give exist in the code."""
import re
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


def test_file_map_names_every_benchmark():
    mapped = _file_map()
    files = sorted(str(p.relative_to(REPO)) for pattern in ("*.py", "*.sh") for p in (REPO / "benchmarks").glob(pattern))
    missing = [f for f in files if not any(f == m or fnmatch(f, m) for m in mapped)]
    assert not missing, f"docs/ARCHITECTURE.md's file map lacks: {missing}"


# --- the docs (DOCS) against the code: flags, defaults, settings, routes, tests, metrics

DOCS = ("README.md", "docs/ARCHITECTURE.md", "docs/GPU_RUN.md")


def _docs_text() -> str:
    return "\n".join((REPO / d).read_text() for d in DOCS)


def _serve_options() -> dict[str, str]:
    """`dwserve serve`'s flags -> their Settings field (the parser --help prints)."""
    from service.cli import _serve_parser
    return {opt: a.dest for a in _serve_parser()._actions for opt in a.option_strings if opt.startswith("--")}


def _serve_commands(text: str) -> list[str]:
    """Each `dwserve serve ...` the docs give: to the closing backtick inline, to the line's
    end inside a fenced block (the next line may be another command)."""
    out = []
    for m in re.finditer(r"dwserve serve\b", text):
        fenced = text.count("```", 0, m.start()) % 2 == 1
        end = text.find("\n", m.end()) if fenced else text.find("`", m.end())
        out.append(text[m.start():end])
    return out


def test_every_flag_given_to_dwserve_serve_exists():
    options = _serve_options()
    commands = _serve_commands(_docs_text())
    assert len(commands) >= 3        # the README's synopsis and its before/after commands
    unknown = sorted({f for c in commands for f in re.findall(r"--[a-z][a-z0-9-]*", c)} - set(options))
    assert not unknown, f"the docs give `dwserve serve` flags it does not take: {unknown}"


def test_every_flag_the_docs_name_belongs_to_a_command():
    """A flag in the docs is `dwserve serve`'s, or one a loadtest/benchmark script parses
    (literally in its source), or perf_analyzer's that its test runs; docker compose and
    genai-perf command lines are theirs."""
    sources = "".join(p.read_text() for p in [REPO / "service" / "loadtest.py", *(REPO / "benchmarks").glob("*.py"),
                                               *(REPO / "benchmarks").glob("*.sh"), REPO / "tests" / "test_perf_analyzer.py"])
    known = set(_serve_options()) | set(re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", sources))
    lines = [line for line in _docs_text().splitlines()
             if not any(tool in line for tool in ("docker compose", "docker-compose", "genai-perf profile"))]
    named = {f for line in lines for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line)}
    assert not named - known, f"the docs name flags no command takes: {sorted(named - known)}"


def test_flag_defaults_the_readme_states_are_the_settings_defaults():
    """'`--max-decode-batch` (16)', '`--prefix-cache-mib`, 256', '`--idle-timeout-s` (default 5 s)'."""
    from service.settings import Settings
    options = _serve_options()
    stated = re.findall(r"`(--[a-z][a-z0-9-]*)`(?: \(|, )(?:default )?(\d+(?:\.\d+)?)\b", _docs_text())
    assert len(stated) >= 4
    wrong = [(flag, value, Settings.model_fields[options[flag]].default) for flag, value in stated
             if float(value) != Settings.model_fields[options[flag]].default]
    assert not wrong, f"(flag, the docs' default, the real one): {wrong}"


def test_every_dwserve_variable_is_a_setting_or_the_compose_files():
    from service.settings import Settings
    compose = "".join(p.read_text() for p in (REPO / "docker").glob("*.yml"))
    text = _docs_text() + (REPO / "service" / "cli.py").read_text()
    from service.preflight import NOT_SETTINGS   # read where it says (tests/test_cli_serve_unknown_env.py)
    names = set(re.findall(r"\bDWSERVE_[A-Z0-9_]*[A-Z0-9]", text))
    misspelt = set(re.findall(r"misspelling such as `(DWSERVE_\w+)`", text))   # the warning's example
    unknown = sorted(n for n in names if n[len("DWSERVE_"):].lower() not in Settings.model_fields
                     and "${" + n not in compose and n not in NOT_SETTINGS and n not in misspelt)
    assert not unknown, f"DWSERVE_ variables named in the docs that nothing reads: {unknown}"


def test_every_benchmark_the_docs_run_is_one_dwserve_bench_runs():
    from service.cli import BENCHMARKS
    named = set(re.findall(r"dwserve bench ([a-z_]+)", _docs_text()))
    assert named and not named - set(BENCHMARKS), sorted(named - set(BENCHMARKS))
    assert all((REPO / "benchmarks" / f"{b}.py").is_file() for b in BENCHMARKS)


ENDPOINT = re.compile(r"`(?:(GET|POST) )?(/(?:v[12]|metrics|openapi\.json|(?:de)?tokenize)[^`\s]*)`")   # (method or "", path)


def path_forms(path: str) -> set[str]:
    """A named path with its `[optional]` parts both in and out."""
    return {path.replace("[", "").replace("]", ""), re.sub(r"\[.*?\]", "", path)}


def test_every_endpoint_the_docs_name_is_served():
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models
    app = create_app(Settings(warmup=False), models=fake_models(), hooks=fake_hooks())
    routes = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    routes |= {(method, r.path) for r in app.routes if hasattr(r, "methods") for method in r.methods}
    patterns = {(method, re.sub(r"\{[^}]+\}", "[^/]+", path)) for method, path in routes}
    named = ENDPOINT.findall(_docs_text())
    assert len(named) >= 20
    missing = []
    for method, path in named:
        for form in path_forms(path):
            if not any((not method or method == m) and re.fullmatch(p, form) for m, p in patterns):
                missing.append(f"{method} {form}".strip())
    assert not missing, f"the docs name endpoints the app does not serve: {missing}"


def test_every_test_file_the_docs_cite_exists():
    cited = set(re.findall(r"\b(test_[a-z0-9_]+\.py)\b", _docs_text()))
    gone = sorted(c for c in cited if not (REPO / "tests" / c).is_file())
    assert cited and not gone, f"the docs cite test files that do not exist: {gone}"


def test_every_metric_the_docs_name_is_exported():
    from service.metrics import ServiceMetrics
    exported = set(re.findall(r"^# HELP (\S+)", ServiceMetrics().render().decode(), re.M))
    named = set(re.findall(r"\b(dwserve_[a-z_]+)\b(?!\.)", _docs_text()))
    unknown = sorted(n for n in named if n not in exported and re.sub(r"_(total|bucket|count|sum)$", "", n) not in exported)
    assert not unknown, f"the docs name metrics the service does not export: {unknown}"
