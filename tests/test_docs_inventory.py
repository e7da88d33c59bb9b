"""The docs name everything there is: tests/test_docs.py checks that what the docs name exists;
these check the other way, so a new route, metric or top-level module cannot ship unmentioned.
Every route the app serves is in README.md or docs/ (load/unload and generate_stream had gone
missing), every exported metric is in README.md's metrics list with the labels the docs give it,
README.md's Layout names every top-level folder and every module directly under models/
(row_chunks.py, allocator.py and placement.py had no line there), and its compose listing every
host port the stack publishes."""
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from test_docs import ENDPOINT, _docs_text, path_forms

REPO = Path(__file__).resolve().parents[1]
MODEL_NAMES = ("lfm2", "mobilenet_v2")


def _path_form(path: str) -> str:
    """`/v2/models/{m}/infer`, `/v2/models/lfm2/infer` and `/v2/models/{model}/infer` alike."""
    path = re.sub(r"\{[^}]+\}", "{}", path)
    return re.sub(r"^/v2/models/(?:%s)(?=/|$)" % "|".join(MODEL_NAMES), "/v2/models/{}", path)


def test_every_served_route_is_named_in_the_docs():
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models
    app = create_app(Settings(warmup=False), models=fake_models(), hooks=fake_hooks())
    served = set(app.openapi()["paths"]) | {"/metrics"}
    named = set()
    for _, path in ENDPOINT.findall(_docs_text()):
        named |= {_path_form(form) for form in path_forms(path)}
    missing = sorted(p for p in served if _path_form(p) not in named)
    assert not missing, f"routes the app serves that no doc names (as `/v2/...` in backticks): {missing}"


def _metric_families() -> dict[str, tuple[str, ...]]:
    """{exported name without dwserve_ and _total: its label names}, from the service's registry."""
    from service.metrics import ServiceMetrics
    out = {}
    for metric in vars(ServiceMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            out[metric._name.removeprefix("dwserve_").removesuffix("_total")] = tuple(metric._labelnames)
    return out


def _metrics_list() -> str:
    """README.md's `- Metrics (prefix ...)` bullet."""
    text = (REPO / "README.md").read_text()
    return text.split("\n- Metrics (prefix `dwserve_`)", 1)[1].split("\n## ", 1)[0]


def test_every_exported_metric_is_in_the_readme_metrics_list():
    families = _metric_families()
    assert len(families) >= 15
    listed = _metrics_list()
    missing = sorted(n for n in families if not re.search(r"`(?:dwserve_)?%s(?:_total)?(?:\{[^}`]*\})?`" % n, listed))
    assert not missing, f"metrics the service exports that README.md's metrics list lacks: {missing}"


def test_metric_labels_the_docs_state_are_the_exported_ones():
    families = _metric_families()
    stated = re.findall(r"`(?:dwserve_)?([a-z_]+)\{([a-z_,]+)\}`", _docs_text())
    assert len(stated) >= 5
    wrong = [(name, labels, families[base]) for name, labels in stated
             if (base := name.removesuffix("_total")) in families and set(labels.split(",")) != set(families[base])]
    assert not wrong, f"(metric, the docs' labels, the exported ones): {wrong}"


def _layout_block() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Layout\n\n```\n", 1)[1].split("```", 1)[0]


def test_readme_layout_names_every_top_level_folder():
    block = _layout_block()
    skip = {"__pycache__", "build", "dist"}
    folders = [p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name not in skip and not p.name.endswith(".egg-info")] + [".ci"]
    missing = [f + "/" for f in sorted(folders) if not re.search(r"(?:^|[\s,])%s/" % re.escape(f), block, re.M)]
    missing += [f for f in ("Makefile",) if not re.search(r"(?:^|[\s,])%s(?=[\s,])" % f, block, re.M)]
    assert not missing, f"README.md's Layout lacks: {missing}"


def test_readme_layout_names_every_models_module():
    block = _layout_block()
    entries = [p.name + "/" if p.is_dir() else p.name for p in (REPO / "models").iterdir()
               if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.name != "__init__.py")]
    missing = sorted(e for e in entries if f"models/{e}" not in block and not re.search(r"\b%s\b" % re.escape(e), block))
    assert not missing, f"README.md's Layout names no line for models/: {missing}"


def test_readme_compose_listing_names_every_published_port():
    """The stack's host ports, as README's compose block lists them (gRPC's 8011/8012 were missing,
    while the gRPC bullet said the stack serves it "at 8001", before's REST port on the host)."""
    import yaml
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    # "[host ip:]host port:container port": the host port is the second field from the end
    published = {str(p).split(":")[-2] for svc in compose["services"].values() for p in svc.get("ports", [])}
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash\ndocker compose -f docker/docker-compose.yml up", 1)[1].split("```", 1)[0]
    missing = sorted(p for p in published if not re.search(r"\b%s\b" % p, block))
    assert published and not missing, f"host ports docker-compose.yml publishes that README's listing lacks: {missing}"
