"""deploy/grafana: the committed dashboard JSON is exactly what deploy/grafana/dashboard.py
generates, covers the panels the before/after story needs, every query is well-formed PromQL
(promtool), and the before/after stats read what they say on known series."""
import importlib.util
import json
import re
import shutil
import subprocess
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
                   "kernel launches per forward", "kernel launches per generated token", "batch size", "errors by status", "in-flight",
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


# --- the queries evaluated by promtool (parse, and the before/after stats on known series) ---

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
GRAFANA_VARS = {"$__rate_interval": "5m", "$model": ".*", "$instance": ".*"}


def _expr(title: str, ref: str = "A") -> str:
    panel = next(p for p in panels() if p["title"] == title)
    expr = next(t["expr"] for t in panel["targets"] if t["refId"] == ref)
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def _promtool_test(tmp_path, records: dict[str, str], test: dict) -> subprocess.CompletedProcess:
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": n, "expr": e} for n, e in records.items()]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                       "tests": [test]}))
    return subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "test.yml")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    records = {f"dashboard:q{i}": e for i, e in enumerate(
        _expr(p["title"], t["refId"]) for p in panels() for t in p["targets"])}
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": n, "expr": e} for n, e in records.items()]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    r = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_before_after_stats_read_each_variants_own_impl(tmp_path):
    """One request overriding depthwise_impl=per_group on the after server leaves a per_group
    launch gauge (and p99 series) there for good; the stats must still read after = auto."""
    series = [
        ('dwserve_kernel_launches_per_forward{variant="before",model="lfm2",impl="per_group",kind="aten_ops",instance="b"}', "4096x10"),
        ('dwserve_kernel_launches_per_forward{variant="after",model="lfm2",impl="auto",kind="aten_ops",instance="a"}', "16x10"),
        ('dwserve_kernel_launches_per_forward{variant="after",model="lfm2",impl="per_group",kind="aten_ops",instance="a"}', "4096x10"),
        ('dwserve:request_duration_seconds:p99_5m{variant="before",model="lfm2",impl="per_group",route="infer"}', "0.8x10"),
        ('dwserve:request_duration_seconds:p99_5m{variant="after",model="lfm2",impl="auto",route="infer"}', "0.1x10"),
        ('dwserve:request_duration_seconds:p99_5m{variant="after",model="lfm2",impl="per_group",route="infer"}', "0.9x10"),
    ]
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [
                {"expr": "dashboard:launches", "eval_time": "5m",
                 "exp_samples": [{"labels": 'dashboard:launches{model="lfm2",kind="aten_ops"}', "value": 256}]},
                {"expr": "dashboard:speedup", "eval_time": "5m",
                 "exp_samples": [{"labels": 'dashboard:speedup{model="lfm2",route="infer"}', "value": 8}]}]}
    r = _promtool_test(tmp_path, {"dashboard:launches": _expr("Kernel launches per forward: before / after"),
                                  "dashboard:speedup": _expr("p99 latency speed-up: before / after")}, test)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_launches_per_token_stat_reads_each_variants_own_impl(tmp_path):
    """The per-token stat, as the per-forward one: before's per_group over after's auto, per
    model and kind, whatever other impls a request left on either server."""
    g = "dwserve_kernel_launches_per_token"
    series = [
        (f'{g}{{variant="before",model="lfm2",impl="per_group",kind="aten_ops",instance="b"}}', "15600x10"),
        (f'{g}{{variant="before",model="lfm2",impl="auto",kind="aten_ops",instance="b"}}', "300x10"),
        (f'{g}{{variant="after",model="lfm2",impl="auto",kind="aten_ops",instance="a"}}', "312x10"),
        (f'{g}{{variant="after",model="lfm2",impl="per_group",kind="aten_ops",instance="a"}}', "15600x10"),
        (f'{g}{{variant="before",model="lfm2",impl="per_group",kind="cuda_kernels",instance="b"}}', "9000x10"),
        (f'{g}{{variant="after",model="lfm2",impl="auto",kind="cuda_kernels",instance="a"}}', "90x10"),
    ]
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [
                {"expr": "dashboard:per_token", "eval_time": "5m",
                 "exp_samples": [{"labels": 'dashboard:per_token{model="lfm2",kind="aten_ops"}', "value": 50},
                                 {"labels": 'dashboard:per_token{model="lfm2",kind="cuda_kernels"}', "value": 100}]}]}
    r = _promtool_test(tmp_path, {"dashboard:per_token": _expr("Kernel launches per generated token: before / after")},
                       test)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_batch_size_p95_is_a_whole_row(tmp_path):
    """Every batch 1 row: histogram_quantile interpolates to 0.95 inside le=1; the panel says 1."""
    series = [(f'dwserve_batch_size_bucket{{variant="after",model="lfm2",instance="a",le="{le}"}}', "0+60x10")
              for le in ("1", "2", "4", "+Inf")]
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [{"expr": "dashboard:batch_p95", "eval_time": "8m",
                                  "exp_samples": [{"labels": 'dashboard:batch_p95{variant="after",model="lfm2"}',
                                                   "value": 1}]}]}
    r = _promtool_test(tmp_path, {"dashboard:batch_p95": _expr("Batch size", "B")}, test)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_ratio_and_quantile_panels_have_no_sample_when_idle(tmp_path):
    """Five minutes of traffic, then none: every panel that divides or takes a quantile shows no
    point for the idle window, not NaN (0/0, histogram_quantile over zero rates). Grafana draws
    NaN as "NaN" or as 0: a 0 s p99, a 0% depthwise share, a mean queue time of 0 that never were."""
    idle = "0+60x5 300x15"
    lab = 'variant="after",model="lfm2",impl="auto",instance="a"'
    series = [(f'dwserve_{c}{{{lab}}}', idle) for c in (
        "requests_total", "kernel_launches_total", "generated_tokens_total", "prefix_cached_tokens_total")]
    for family in ("request_duration_seconds", "queue_duration_seconds", "compute_duration_seconds",
                   "depthwise_duration_seconds", "batch_size", "decode_batch_size",
                   "time_to_first_token_seconds", "time_per_output_token_seconds"):
        labels = lab + (',route="infer"' if family == "request_duration_seconds" else "")
        series += [(f'dwserve_{family}_bucket{{{labels},le="{le}"}}', idle) for le in ("0.1", "+Inf")]
        series += [(f'dwserve_{family}_{part}{{{labels}}}', idle) for part in ("sum", "count")]
    checked = {f"dashboard:q{i}": e for i, e in enumerate(
        _expr(p["title"], t["refId"]) for p in panels() for t in p["targets"])
        if "/" in e or "histogram_quantile" in e or "dwserve:" in e}
    assert len(checked) >= 12, checked
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": n, "expr": e} for n, e in checked.items()]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [{"expr": n, "eval_time": "15m", "exp_samples": []} for n in checked]}
    shipped = str(ROOT / "deploy" / "prometheus" / "rules" / "dwserve.rules.yml")
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": [shipped, "dashboard.yml"],
                                                       "evaluation_interval": "1m", "tests": [test]}))
    r = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "test.yml")], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, "\n".join(f"{n}: {e}" for n, e in checked.items()) + "\n" + r.stdout + r.stderr


@needs_promtool
def test_depthwise_share_stat_reads_each_variants_own_impl(tmp_path):
    """As the ratio stats: requests overriding depthwise_impl leave other impls' shares on a
    server for 5 minutes; the stat shows each variant under its own default impl, not the max."""
    r = "dwserve:depthwise_share:ratio_rate5m"
    series = [(f'{r}{{variant="before",model="lfm2",impl="per_group"}}', "0.6x10"),
              (f'{r}{{variant="before",model="lfm2",impl="auto"}}', "0.05x10"),
              (f'{r}{{variant="after",model="lfm2",impl="auto"}}', "0.03x10"),
              (f'{r}{{variant="after",model="lfm2",impl="per_group"}}', "0.6x10")]
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "promql_expr_test": [{"expr": "dashboard:share", "eval_time": "5m", "exp_samples": [
                {"labels": 'dashboard:share{variant="before",model="lfm2"}', "value": 0.6},
                {"labels": 'dashboard:share{variant="after",model="lfm2"}', "value": 0.03}]}]}
    r = _promtool_test(tmp_path, {"dashboard:share": _expr("Depthwise share of compute")}, test)
    assert r.returncode == 0, r.stdout + r.stderr
