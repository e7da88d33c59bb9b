"""The compose topology (docker/docker-compose.yml) without Docker: two `dwserve serve` processes
on free loopback ports (before = per_group, after = auto), a real Prometheus started from the
shipped deploy/prometheus config (retargeted to those ports, 1 s intervals) and the shipped rules,
a few seconds of bounded load, then EVERY query of the shipped Grafana dashboard is evaluated
through Prometheus's HTTP API: none may be invalid PromQL, and >= 90% must return data.

Skips cleanly without /usr/bin/prometheus (`apt-get install prometheus`; .ci/run does it).
DWSERVE_TOPOLOGY_FAKE=1 runs the same topology with the service's fake models (for debugging
the stack itself in seconds).
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from server_process import free_port

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dwserve.json"
PROMETHEUS = shutil.which("prometheus")
FAKE = os.environ.get("DWSERVE_TOPOLOGY_FAKE") == "1"
READY_TIMEOUT_S = 150      # both servers build and warm their models on 2 shared cores
LOAD_S = 6.0
# Grafana's variables, as "All" selects them, and a rate window that spans >= 4 scrapes at 1 s.
SUBSTITUTE = {"$__rate_interval": "30s", "$model": ".*", "$instance": ".*"}

pytestmark = [pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"),
              pytest.mark.timeout(300)]


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    # conftest sets TRITON_INTERPRET=1 for the kernel tests; servers run as in production.
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**full_env, **(env or {})})


def dwserve_cmd(port: int, impl: str) -> list[str]:
    if FAKE:   # the service's own fake-model server: same server stack, millisecond models
        return [sys.executable, "-c", "from service.testing import serve_fake; serve_fake()",
                "--port", str(port), "--depthwise-impl", impl, "--delay-s", "0.01", "--warmup", "false",
                "--depthwise-sample-every", "1"]
    # Small limits: one torch thread each (2 cores shared), small batches and queue, every
    # forward timed for the depthwise share, launches recounted often.
    return [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--depthwise-impl", impl, "--max-batch-size", "4", "--max-queue-delay-ms", "2",
            "--max-queue-size", "16", "--depthwise-sample-every", "1", "--launch-recount-every", "50",
            "--max-new-tokens", "16", "--log-level", "warning"]


def prometheus_config(tmp: Path, ports: dict[str, int]) -> Path:
    """The shipped config with loopback targets, 1 s intervals and the shipped rules by path."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(p) for p in sorted((PROM_DIR / "rules").glob("*.yml"))]
    assert cfg["rule_files"], "no rules shipped under deploy/prometheus/rules"
    for job in cfg["scrape_configs"]:
        job["scrape_timeout"] = "1s"
        for sc in job["static_configs"]:
            variant = sc.get("labels", {}).get("variant")
            sc["targets"] = [f"127.0.0.1:{ports[variant or 'prometheus']}"]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def wait_ok(url: str, procs: list[subprocess.Popen], logs: list[Path], timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                pytest.fail(f"{p.args[:4]} exited with {p.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    pytest.fail(f"{url} not ready after {timeout_s} s\n{tails}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topology")
    ports = {"before": free_port(), "after": free_port(), "prometheus": free_port()}
    procs, logs = [], []
    try:
        for variant, impl in (("before", "per_group"), ("after", "auto")):
            logs.append(tmp / f"dwserve-{variant}.log")
            procs.append(start(dwserve_cmd(ports[variant], impl), logs[-1], {"OMP_NUM_THREADS": "1"}))
        logs.append(tmp / "prometheus.log")
        procs.append(start([PROMETHEUS, f"--config.file={prometheus_config(tmp, ports)}",
                            f"--storage.tsdb.path={tmp / 'data'}", "--log.level=warn",
                            f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], logs[-1]))
        urls = {v: f"http://127.0.0.1:{ports[v]}" for v in ports}
        wait_ok(f"{urls['prometheus']}/-/ready", procs, logs, 30)
        for v in ("before", "after"):
            wait_ok(f"{urls[v]}/v2/health/ready", procs, logs, READY_TIMEOUT_S)
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def drive_load(url: str, seconds: float) -> dict[str, int]:
    """One closed-loop client per server: lfm2 and mobilenet_v2 infer, short generations (one
    repeated prompt) and a bad request now and then (so the errors panel has 4xx to show). Returns status counts."""
    ids = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 8], "data": list(range(1, 9))}]}
    image = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                         "data": [0.5] * (3 * 224 * 224)}]}
    # The generation repeats a 70-token prompt: from the second on, its first 64 tokens come
    # from the prefix cache (the prefix-cached tokens panel).
    calls = [("/v2/models/lfm2/infer", ids), ("/v1/generate", {"input_ids": list(range(1, 71)), "max_new_tokens": 3}),
             ("/v2/models/lfm2/infer", ids), ("/v2/models/mobilenet_v2/infer", image),
             ("/v2/models/lfm2/infer", {"inputs": [{"name": "input_ids"}]})]          # -> 400
    counts: dict[str, int] = {}
    deadline = time.time() + seconds
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while time.time() < deadline or i < len(calls):    # at least one of each kind
            path, body = calls[i % len(calls)]
            code = str(client.post(path, json=body).status_code)
            counts[f"{path} {code}"] = counts.get(f"{path} {code}", 0) + 1
            i += 1
    return counts


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    out = []
    for p in panels:
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in SUBSTITUTE.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unsubstituted variable in {expr}"
            out.append((f"{p['title']} [{t['refId']}]", expr))
    return out


def test_dashboard_queries_against_live_topology(stack):
    results: dict[str, dict[str, int]] = {}
    threads = [threading.Thread(target=lambda v=v: results.__setitem__(v, drive_load(stack[v], LOAD_S)))
               for v in ("before", "after")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for v in ("before", "after"):
        expected = {"/v2/models/lfm2/infer 200", "/v2/models/mobilenet_v2/infer 200", "/v1/generate 200",
                    "/v2/models/lfm2/infer 400"}
        assert expected <= set(results.get(v, {})), f"{v}: {results.get(v)}"

    prom = stack["prometheus"]
    queries = dashboard_queries()
    assert len(queries) >= 15
    # Poll until the scrapes and rule evaluations after the load have landed (bounded).
    deadline = time.time() + 30
    while True:
        invalid, empty = [], []
        for title, expr in queries:
            r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
            if r["status"] != "success":
                invalid.append(f"{title}: {r.get('error')}: {expr}")
            elif not r["data"]["result"]:
                empty.append(f"{title}: {expr}")
        if invalid or len(empty) <= 0.1 * len(queries) or time.time() > deadline:
            break
        time.sleep(2)
    print(f"{len(queries) - len(empty)}/{len(queries)} dashboard queries returned data; empty: {empty}")
    assert not invalid, "invalid PromQL in the dashboard:\n" + "\n".join(invalid)
    assert len(empty) <= 0.1 * len(queries), (
        f"{len(empty)}/{len(queries)} dashboard queries returned no data:\n" + "\n".join(empty))

    # Both variants scraped with their labels, both models visible to the `model` variable.
    up = httpx.get(f"{prom}/api/v1/query", params={"query": 'up{job="dwserve"}'}).json()["data"]["result"]
    assert {(s["metric"]["variant"], s["value"][1]) for s in up} == {("before", "1"), ("after", "1")}
    models = httpx.get(f"{prom}/api/v1/label/model/values",
                       params={"match[]": "dwserve_requests_total"}).json()["data"]
    assert {"lfm2", "mobilenet_v2"} <= set(models)
    # Every shipped rule evaluates without error against real series.
    groups = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert groups and not bad, bad
