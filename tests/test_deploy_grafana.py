"""deploy/grafana: the committed dashboard JSON is exactly what deploy/grafana/dashboard.py
generates, covers the panels the before/after story needs, and every query is well-formed."""
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "dwserve.json"

pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[dev]' (grafana-foundation-sdk)")


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_committed_files_match_their_generators():
    gen = load_module(ROOT / "deploy" / "generate.py", "deploy_generate")
    for path, text in gen.outputs().items():
        assert path.read_text() == text, f"{path} is stale: run `python deploy/generate.py`"


def test_dashboard_has_the_before_after_panels():
    titles = " | ".join(p["title"].lower() for p in panels())
    for needle in ["request rate", "p50 / p95 / p99", "queue vs compute", "depthwise share",
                   "kernel launches per forward", "batch size", "errors by status", "in-flight",
                   "tokens/s", "time to first token"]:
        assert needle in titles, f"no panel for {needle!r}: {titles}"


def test_dashboard_variables_and_queries_are_consistent():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "dwserve"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "model", "instance"} <= names
    exprs = [t["expr"] for p in panels() for t in p["targets"]]
    assert len(exprs) >= 15
    for e in exprs:
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
        used = set(re.findall(r"\$(\w+)", e)) - {"__rate_interval"}
        assert used <= names, f"{e} uses undefined variables {used - names}"
    # Every panel uses the datasource variable, so the JSON imports into any Grafana.
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels())
    # The model filter reaches every raw-metric query.
    assert all('model=~"$model"' in e for e in exprs if "dwserve_build_info" not in e)


def test_provisioning_points_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (prom,) = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090" and prom["isDefault"]
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dwserve.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
