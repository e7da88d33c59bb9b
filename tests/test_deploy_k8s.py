"""deploy/k8s: every manifest parses, the key fields line up (names, ports, probes, resources,
GPU variant, KServe v2), and the PrometheusRule carries exactly the compose stack's rules."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_manifest_parses_with_kind_and_name(name):
    for d in docs(name):
        assert d.get("kind"), f"{name}: a document without kind"
        if d["kind"] != "Kustomization":
            assert d["apiVersion"] and d["metadata"]["name"], name


@pytest.mark.parametrize("name, image, device", [
    pytest.param("deployment.yaml", "dwserve:cpu", "cpu", id="cpu"),
    pytest.param("deployment-gpu.yaml", "dwserve:cuda", "cuda", id="gpu"),
])
def test_deployment(name, image, device):
    (dep,) = docs(name)
    assert dep["kind"] == "Deployment" and dep["metadata"]["name"] == "dwserve"
    selector = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items() and labels["variant"] in {"before", "after"}
    c = container(dep)
    assert c["image"] == image and c["args"][:1] == ["serve"] and "0.0.0.0" in c["args"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DWSERVE_DEVICE"] == device and env["DWSERVE_DEPTHWISE_IMPL"] == "auto"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert str(ports["http"]) == env["DWSERVE_PORT"] and str(ports["grpc"]) == env["DWSERVE_GRPC_PORT"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == 1) if device == "cuda" else gpus is None
    # torch's pool defaults to the node's cores, not the pod's CPU limit: more threads than
    # the quota are throttled together (the GPU pod's host threads feed the launches)
    limit = float(c["resources"]["limits"]["cpu"])
    assert float(env["DWSERVE_TORCH_THREADS"]) == float(env["OMP_NUM_THREADS"]) == limit
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_service_hpa_and_servicemonitor_target_the_deployment():
    (dep,) = docs("deployment.yaml")
    app = dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    (svc,) = docs("service.yaml")
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": app, "variant": "after"}   # not before's pods
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    (hpa,) = docs("hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dwserve"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (sm,) = docs("servicemonitor.yaml")
    assert sm["spec"]["selector"]["matchLabels"] == svc["metadata"]["labels"]
    assert sm["spec"]["endpoints"][0]["port"] == "http" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "variant" in sm["spec"]["podTargetLabels"]


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_hpa_alone_sets_the_replica_count(name):
    """The HPA scales both Deployments (same name). A spec.replicas in the manifest would set the
    count back on every `kubectl apply -k`: an HPA at 4 under load drops to 1, and the pods it
    then adds take minutes to warm. Kubernetes' HPA docs say to leave the field out."""
    (hpa,) = docs("hpa.yaml")
    (dep,) = docs(name)
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert "replicas" not in dep["spec"], f"{name}: spec.replicas fights the HPA"


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_pod_outlives_dwserves_own_shutdown(name):
    """On SIGTERM dwserve lets in-flight requests run --graceful-shutdown-s (30 s by default),
    then answers the ones it cuts with 503 + Retry-After (CUT_ANSWERS_S). The kubelet SIGKILLs
    at terminationGracePeriodSeconds (30 s when unset), preStop included: it must come later,
    or those requests get a reset connection instead of their 503."""
    from service.cli import CUT_ANSWERS_S
    from service.settings import Settings

    (dep,) = docs(name)
    pod, c = dep["spec"]["template"]["spec"], container(dep)
    env = {e["name"]: e["value"] for e in c["env"]}
    grace = float(env.get("DWSERVE_GRACEFUL_SHUTDOWN_S", Settings.model_fields["graceful_shutdown_s"].default))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    delay = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod.get("terminationGracePeriodSeconds", 30) >= delay + grace + CUT_ANSWERS_S + 5, name


def test_prometheusrule_matches_the_compose_rules():
    (rule,) = docs("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "dwserve.rules.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"], "run `python deploy/generate.py`"


def test_dashboard_configmap_carries_the_shipped_dashboard():
    import json

    (cm,) = docs("grafana-dashboard.yaml")
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "dwserve.json").read_text())
    assert json.loads(cm["data"]["dwserve.json"]) == shipped, "run `python deploy/generate.py`"


def test_kserve_inferenceservice_speaks_v2():
    by_kind = {d["kind"]: d for d in docs("kserve.yaml")}
    isvc, runtime = by_kind["InferenceService"], by_kind["ServingRuntime"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and model["runtime"] == runtime["metadata"]["name"]
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    (c,) = runtime["spec"]["containers"]
    port = c["ports"][0]["containerPort"]
    assert c["args"][c["args"].index("--port") + 1] == str(port)
    assert isvc["metadata"]["annotations"]["prometheus.kserve.io/port"] == str(port)
    # KServe routes traffic to the pod only once the models are warmed up
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert float(env["DWSERVE_TORCH_THREADS"]) == float(c["resources"]["limits"]["cpu"])


def test_kustomization_lists_existing_files():
    (k,) = docs("kustomization.yaml")
    for res in k["resources"]:
        assert (K8S / res).is_file(), res
    assert {"prometheusrule.yaml", "grafana-dashboard.yaml", "deployment.yaml"} <= set(k["resources"])


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml", "before/deployment.yaml",
                                  "before/deployment-gpu.yaml"])
def test_every_dwserve_variable_is_a_setting_with_a_valid_value(name):
    """A misspelt DWSERVE_* name is ignored by pydantic-settings, and a bad value only fails
    when the pod starts: both are caught here, against service/settings.py."""
    from service.settings import Settings

    (dep,) = docs(name)
    env = {e["name"]: e["value"] for e in container(dep)["env"] if e["name"].startswith("DWSERVE_")}
    fields = {k[len("DWSERVE_"):].lower(): v for k, v in env.items()}
    unknown = sorted(k for k in fields if k not in Settings.model_fields)
    assert not unknown, f"{name}: no such setting: {unknown}"
    Settings(**fields)   # raises naming the bad value
