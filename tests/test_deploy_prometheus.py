"""deploy/prometheus: config and rules pass promtool, the alert unit tests pass, and the rules
only use metric names from DESIGN.md (a typo would silently never fire)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "dwserve.rules.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")

# Exactly the metric families DESIGN.md names (histograms add _bucket/_sum/_count).
DESIGN_METRICS = {
    "dwserve_requests_total", "dwserve_request_duration_seconds", "dwserve_queue_duration_seconds",
    "dwserve_compute_duration_seconds", "dwserve_depthwise_duration_seconds", "dwserve_batch_size",
    "dwserve_kernel_launches_per_forward", "dwserve_kernel_launches_total", "dwserve_inflight_requests",
    "dwserve_generated_tokens_total", "dwserve_time_to_first_token_seconds",
    "dwserve_time_per_output_token_seconds", "dwserve_build_info",
}
# Metrics the service exports beyond DESIGN.md's (adding is allowed; each is in README's metrics
# list) that a rule reads: dwserve_forwards_total, the per-impl count of one-shot forwards.
SERVICE_EXTRA_METRICS = {"dwserve_forwards_total"}


def metric_names(expr: str) -> set[str]:
    """Metric families an expression reads (histogram series mapped back to their family)."""
    out = set()
    for name in re.findall(r"\b(dwserve_[a-z_]+)", expr):
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        out.add(family if family in DESIGN_METRICS else name)
    return out


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@needs_promtool
def test_config_is_valid():
    r = run("check", "config", "--syntax-only", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_rules_are_valid():
    r = run("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
@pytest.mark.parametrize("name", sorted(p.name for p in (PROM / "tests").glob("*.test.yml")))
def test_alert_unit_tests_pass(name):
    r = run("test", "rules", str(PROM / "tests" / name))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_unit_test_files_are_all_run():
    """One case per alert, the edges (no traffic, a replica down, ...), several impls per variant,
    counted forwards in launches per forward."""
    assert {"dwserve.rules.test.yml", "edges.rules.test.yml", "impls.rules.test.yml",
            "forwards.rules.test.yml"} <= {p.name for p in (PROM / "tests").glob("*.test.yml")}


def test_scrape_config_labels_both_variants():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "dwserve")
    variants = {sc["labels"]["variant"]: sc["targets"] for sc in job["static_configs"]}
    assert variants == {"before": ["dwserve-before:8000"], "after": ["dwserve-after:8000"]}
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_rules_cover_the_required_alerts_and_records():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    records = {r["record"] for r in rules if "record" in r}
    assert {"DwserveLatencySLOBreached", "DwserveErrorRatioHigh", "DwserveQueueSaturated",
            "DwserveKernelLaunchesPerForwardRising", "DwserveTimeToFirstTokenSLOBreached",
            "DwserveTargetDown", "DwserveTargetsAbsent", "DwserveVariantGone"} <= set(alerts)
    assert {"dwserve:kernel_launches_per_request:ratio_rate5m", "dwserve:kernel_launches_per_forward:ratio_rate5m",
            "dwserve:depthwise_share:ratio_rate5m",
            "dwserve:request_duration_seconds:p99_5m", "dwserve:time_to_first_token_seconds:p99_5m"} <= records
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_rules_use_only_design_metric_names():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = set().union(*(metric_names(r["expr"]) for g in groups for r in g["rules"]))
    allowed = DESIGN_METRICS | SERVICE_EXTRA_METRICS
    assert used and used <= allowed, f"not in DESIGN.md: {sorted(used - allowed)}"


def test_extra_metric_names_the_rules_may_read_are_exported():
    """A typo in SERVICE_EXTRA_METRICS would let a rule read a series that never exists."""
    from service.metrics import ServiceMetrics
    exported = set(re.findall(r"^# HELP (\S+)", ServiceMetrics().render().decode(), re.M))
    assert SERVICE_EXTRA_METRICS <= exported, sorted(SERVICE_EXTRA_METRICS - exported)


def test_launches_per_forward_divides_by_every_forward_that_counted_launches():
    """Counted forwards (warm-up, new shape class, every launch_recount_every-th) add launches but
    are not timed: dividing by compute_duration's count read high, or nothing where every
    forward of an impl was counted (tests/forwards.rules.test.yml)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    expr = _rule(groups, "dwserve:kernel_launches_per_forward:ratio_rate5m")["expr"]
    assert "rate(dwserve_forwards_total[5m])" in expr and "compute_duration" not in expr, expr


def _rule(groups, name):
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name or r.get("record") == name)


def test_latency_slo_reads_one_shot_routes_and_5xx_alerts_skip_499():
    """Generations (route="generate") take seconds by design: the p99 SLO reads the one-shot
    routes only; a client that gave up (499) is no server error."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for name in ("dwserve:request_duration_seconds:p50_5m", "dwserve:request_duration_seconds:p99_5m"):
        assert 'route=~"infer|classify"' in _rule(groups, name)["expr"], name
    assert "route" in _rule(groups, "dwserve:request_duration_seconds:p99_5m")["expr"].split("sum by")[1].split(")")[0]
    assert "dwserve_time_to_first_token_seconds" in _rule(groups, "dwserve:time_to_first_token_seconds:p99_5m")["expr"]
    for g in groups:
        for r in g["rules"]:
            for selector in re.findall(r'status=~?"([^"]+)"', r["expr"]):
                assert not re.fullmatch(selector, "499") or r.get("alert") is None, (r.get("alert"), selector)
    # launches are divided by the requests that counted them, not by every 2xx
    ratio = _rule(groups, "dwserve:kernel_launches_per_request:ratio_rate5m")["expr"]
    assert "requests_ok" not in ratio and "requests_oneshot" in ratio


def test_quantile_alert_thresholds_are_bucket_bounds():
    """histogram_quantile interpolates inside a bucket, so an alert comparing a quantile with a
    threshold inside one pages on a guess (at 2 s, requests that all took 1.1 s read p99 2.485 s:
    tests/buckets.rules.test.yml). At a bucket bound the comparison is exact."""
    from service.metrics import LATENCY_BUCKETS

    groups = yaml.safe_load(RULES.read_text())["groups"]
    checked = []
    for r in (r for g in groups for r in g["rules"] if "alert" in r):
        m = re.search(r"dwserve:(\w+_seconds):p\d+_5m\b.*?>\s*([0-9.]+)\s*$", " ".join(r["expr"].split()))
        if m:
            assert float(m.group(2)) in LATENCY_BUCKETS, (
                f"{r['alert']}: threshold {m.group(2)} s is inside a bucket of {m.group(1)} "
                f"({LATENCY_BUCKETS}); compare with a bound, or add one to LATENCY_BUCKETS")
            checked.append(r["alert"])
    assert {"DwserveLatencySLOBreached", "DwserveTimeToFirstTokenSLOBreached", "DwserveQueueWaitHigh"} <= set(checked)
