"""deploy/k8s and deploy/k8s/before: the "after" and "before" variants side by side without
mixing. The old advice (a second copy of deployment.yaml with variant "before") made the dwserve
Service send user traffic to both variants and the two Deployments' selectors overlap (each
adopting the other's pods, the HPA reading both). Now each Deployment selects its own variant,
each Service one variant, and the ServiceMonitor scrapes both."""
import importlib.util
import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_deploy_k8s import K8S, container, docs

ROOT = Path(__file__).resolve().parents[1]
BEFORE = K8S / "before"
KUBECTL = shutil.which("kubectl")


def kustomization(folder: str) -> list[dict]:
    """The documents `kubectl apply -k deploy/k8s/folder` would apply (its resources, read as files)."""
    (k,) = docs(f"{folder}/kustomization.yaml")
    return [d for res in k["resources"] for d in docs(f"{folder}/{res}")]


def installs() -> list[list[dict]]:
    """What runs together: deploy/k8s + deploy/k8s/before, on CPU and on GPU nodes (the GPU
    files replace the CPU Deployments of the same name)."""
    cpu = kustomization(".") + kustomization("before")
    gpu = [d for d in cpu if d["kind"] != "Deployment"] + docs("deployment-gpu.yaml") + docs("before/deployment-gpu.yaml")
    return [cpu, gpu]


def pods(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"}


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def impl(dep: dict) -> str:
    return {e["name"]: e["value"] for e in container(dep)["env"]}["DWSERVE_DEPTHWISE_IMPL"]


@pytest.mark.parametrize("docs", installs(), ids=["cpu", "gpu"])
def test_deployment_selectors_do_not_overlap(docs):
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deps} == {"dwserve", "dwserve-before"}
    for a, b in itertools.permutations(deps, 2):
        sel = a["spec"]["selector"]["matchLabels"]
        assert selects(sel, a["spec"]["template"]["metadata"]["labels"]), a["metadata"]["name"]
        assert not selects(sel, b["spec"]["template"]["metadata"]["labels"]), (a["metadata"]["name"], b["metadata"]["name"])
    by_name = {d["metadata"]["name"]: d for d in deps}
    assert impl(by_name["dwserve"]) == "auto" and impl(by_name["dwserve-before"]) == "per_group"
    assert pods(docs)["dwserve"]["variant"] == "after" and pods(docs)["dwserve-before"]["variant"] == "before"


@pytest.mark.parametrize("docs", installs(), ids=["cpu", "gpu"])
def test_each_service_selects_one_variant_and_the_user_service_after(docs):
    labels = pods(docs)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == {"dwserve", "dwserve-before"}
    picked = {name: {labels[dep]["variant"] for dep in labels if selects(svc["spec"]["selector"], labels[dep])}
              for name, svc in services.items()}
    assert picked == {"dwserve": {"after"}, "dwserve-before": {"before"}}


def test_servicemonitor_scrapes_both_services_and_hpa_scales_after_only():
    docs = installs()[0]
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), svc["metadata"]["name"]
    assert "variant" in sm["spec"]["podTargetLabels"]
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "dwserve"
    (before,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dwserve-before"]
    assert before["spec"]["replicas"] == 1   # no HPA for the baseline


def test_before_files_are_generated_from_the_after_ones():
    spec = importlib.util.spec_from_file_location("dwserve_generate", ROOT / "deploy" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name in ("deployment.yaml", "deployment-gpu.yaml", "service.yaml"):
        assert (BEFORE / name).read_text() == gen.render_before(name), f"{name}: run `python deploy/generate.py`"


def test_deployment_comment_gives_the_working_advice():
    text = (K8S / "deployment.yaml").read_text()
    assert "deploy a second copy" not in text
    assert "kubectl apply -k deploy/k8s/before" in text


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (its kustomize renders the folders)")
@pytest.mark.parametrize("folder", [K8S, BEFORE], ids=["after", "before"])
def test_kustomize_renders(folder):
    r = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(r.stdout) if d}
    assert {"Deployment", "Service"} <= kinds


def test_servicemonitor_gives_both_services_the_job_the_alerts_select():
    """The Prometheus Operator names a ServiceMonitor target's job after the Service's label
    that spec.jobLabel names, else after the Service itself: without jobLabel the baseline's
    series came as job="dwserve-before", outside every `up{job="dwserve"}` alert, so a dead
    before pod never fired DwserveTargetDown and DwserveVariantGone never saw that variant."""
    rules = (ROOT / "deploy" / "prometheus" / "rules" / "dwserve.rules.yml").read_text()
    alerted = set(re.findall(r'job="([^"]+)"', rules))
    assert alerted == {"dwserve"}, alerted
    docs = installs()[0]
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    label = sm["spec"].get("jobLabel")
    jobs = {svc["metadata"]["name"]: svc["metadata"]["labels"].get(label, svc["metadata"]["name"])
            for svc in docs if svc["kind"] == "Service"}
    assert jobs == {"dwserve": "dwserve", "dwserve-before": "dwserve"}, jobs
