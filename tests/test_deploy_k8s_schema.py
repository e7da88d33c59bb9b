"""deploy/k8s/**/*.yaml against the Kubernetes API's own schemas, strict, offline: what
`kubectl apply` (client- and server-side validation, strict by default since 1.25) would refuse
fails here instead. test_deploy_k8s.py and test_deploy_k8s_variants.py check chosen fields; a
misspelt or misplaced field (`livenessprobe`, `resources.limit`) or a wrong type (`containerPort:
"8000"`, an unquoted env value) passed them.

Schemas: kubernetes-validate's, the JSON schemas generated from each Kubernetes release's OpenAPI
spec and bundled in the wheel (no network), in their strict form (every object
`additionalProperties: false`), at two releases: KUBERNETES_VERSIONS, the oldest one these
manifests are meant for and the newest the pinned kubernetes-validate bundles.

By kind:
- Built-in kinds (Deployment, Service, HorizontalPodAutoscaler, ConfigMap, and any built-in kind a
  later manifest adds, found by apiVersion/kind): validated whole.
- Kustomization (kustomization.yaml): kustomize's own file, read by kubectl on the client and
  never sent to the API server, so no Kubernetes schema covers it; test_deploy_k8s.py checks that
  its resources exist, test_deploy_k8s_variants.py renders it with `kubectl kustomize` where
  kubectl is installed.
- CRD kinds (ServiceMonitor and PrometheusRule of the Prometheus Operator; ServingRuntime and
  InferenceService of KServe): their schemas live in the operators' CRDs, which
  kubernetes-validate does not bundle, and no small, maintained offline source of them installs
  here (cloudcoil-models-prometheus-operator has pydantic models, not the CRD schemas, and its
  current releases need Python >= 3.14; nothing for KServe: its `kserve` package is a whole
  serving stack). So the parts that ARE core types are validated with the core schemas: every
  CRD's metadata as an ObjectMeta, ServingRuntime's containers (corev1.Container in KServe's
  CRD) as a Pod's; their specs keep test_deploy_k8s.py's field checks (and the PrometheusRule's
  groups equal deploy/prometheus's rules, which promtool checks in test_deploy_prometheus.py).

What no schema says (a probe's named port that no container port has, an unparsable quantity,
requests above limits, a Service targetPort no selected pod names): the API server or the
kubelet refuses it at apply or at run time; tests/k8s_checks.py's `problems()` checks those
by hand.

Each check is shown to fail: the negative cases feed a broken copy of deployment.yaml (or of
the other kinds) and expect the error."""
from __future__ import annotations

import copy
import functools
from decimal import Decimal
from pathlib import Path

import kubernetes_validate as kv       # the dev extra: a missing install fails here, never skips
import pytest
import yaml
from k8s_checks import problems, quantity

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# 1.30: the oldest release the manifests are meant for (nothing in them is newer; autoscaling/v2
# is GA since 1.23); 1.37: the newest kubernetes-validate>=1.37 (pyproject's dev extra) bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")
NOT_KUBERNETES = {"Kustomization"}
CRDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
        "ServingRuntime": "serving.kserve.io/v1alpha1", "InferenceService": "serving.kserve.io/v1beta1"}


@functools.cache
def manifests() -> list[tuple[str, dict]]:
    """(path under deploy/k8s, document) for every non-empty document of every file (shared:
    read-only; one() gives a copy to break)."""
    return [(str(p.relative_to(K8S)), d) for p in sorted(K8S.rglob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


def doc_id(path: str, doc: dict) -> str:
    return f"{path}:{doc['kind']}/{doc.get('metadata', {}).get('name', '')}"


def one(path: str, kind: str) -> dict:
    (d,) = [d for p, d in manifests() if p == path and d["kind"] == kind]
    return copy.deepcopy(d)


def schema_error(doc: dict, version: str) -> str | None:
    """kubectl's verdict, offline: None, or where and why the strict schema refuses `doc`."""
    try:
        used = kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        return f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
    except kv.SchemaNotFoundError as e:     # a misspelt kind, or an apiVersion this release lacks
        return f"<root>: {e.message}"
    assert used == version, f"asked for Kubernetes {version}'s schemas, kubernetes-validate used {used}'s"
    return None


def core_parts(doc: dict) -> list[tuple[str, dict]]:
    """A CRD document's parts that are core types, each wrapped in the core object that holds
    that type (ObjectMeta in a ConfigMap, containers in a Pod), so the core schemas apply."""
    parts = [("metadata", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata")})]
    if doc["kind"] == "ServingRuntime":
        parts.append(("spec.containers", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                          "spec": {"containers": doc["spec"].get("containers")}}))
    return parts


# -- every document, strict ------------------------------------------------------------------

def test_every_document_is_a_kind_this_file_knows():
    for path, d in manifests():
        kind = d.get("kind")
        if kind in NOT_KUBERNETES or kind in CRDS:
            assert kind in NOT_KUBERNETES or d["apiVersion"] == CRDS[kind], f"{path}: {kind} {d['apiVersion']}"
            continue
        try:
            kv.validate(d, KUBERNETES_VERSIONS[0], strict=True)
        except kv.ValidationError:
            pass       # reported by test_core_documents_validate
        except kv.SchemaNotFoundError as e:
            pytest.fail(f"{path}: {e.message}: a typo in apiVersion/kind, or a CRD to add to CRDS (and say "
                        "in this file's docstring what checks it)")


CORE = [pytest.param(d, v, id=f"{v}:{doc_id(p, d)}") for p, d in manifests()
        if d["kind"] not in NOT_KUBERNETES | set(CRDS) for v in KUBERNETES_VERSIONS]
CRD_DOCS = [pytest.param(d, v, id=f"{v}:{doc_id(p, d)}") for p, d in manifests()
            if d["kind"] in CRDS for v in KUBERNETES_VERSIONS]


def test_every_core_kind_is_covered():
    kinds = {d["kind"] for p, d in manifests()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds
    assert {d.values[0]["kind"] for d in CORE} == kinds - NOT_KUBERNETES - set(CRDS)
    assert {d.values[0]["kind"] for d in CRD_DOCS} == kinds & set(CRDS)


@pytest.mark.parametrize("doc, version", CORE)
def test_core_documents_validate(doc, version):
    assert schema_error(doc, version) is None


@pytest.mark.parametrize("doc, version", CRD_DOCS)
def test_crd_documents_core_parts_validate(doc, version):
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(doc)
    for where, wrapped in core_parts(doc):
        err = schema_error(wrapped, version)
        assert err is None, f"{where}: {err}"


# -- what the schemas cannot say (tests/k8s_checks.py) --------------------------------------


@pytest.mark.parametrize("doc", [pytest.param(d, id=doc_id(p, d)) for p, d in manifests()
                                 if d["kind"] not in NOT_KUBERNETES])
def test_what_the_schemas_cannot_say(doc):
    every = [d for _, d in manifests()]
    assert problems(doc, every) == []


# -- and each check fails on a broken manifest ---------------------------------------------------

def _c(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


BROKEN_SCHEMA = [  # (id, what to break in deployment.yaml, the path of the error, a word of its message)
    ("livenessprobe misspelt", lambda d: _rename(_c(d), "livenessProbe", "livenessprobe"),
     "spec.template.spec.containers.0", "'livenessprobe' was unexpected"),
    ("resources.limit", lambda d: _rename(_c(d)["resources"], "limits", "limit"),
     "spec.template.spec.containers.0.resources", "'limit' was unexpected"),
    ("probe on the pod, not the container", lambda d: d["spec"]["template"]["spec"].update(
        readinessProbe=_c(d).pop("readinessProbe")), "spec.template.spec", "'readinessProbe' was unexpected"),
    ("metadata.lables", lambda d: _rename(d["metadata"], "labels", "lables"), "metadata", "'lables' was unexpected"),
    ("containerPort a string", lambda d: _c(d)["ports"][0].update(containerPort="8000"),
     "spec.template.spec.containers.0.ports.0.containerPort", "not of type 'integer'"),
    ("env value unquoted", lambda d: _c(d)["env"][0].update(value=8000),
     "spec.template.spec.containers.0.env.0.value", "not of type 'string'"),
    ("replicas a string", lambda d: d["spec"].update(replicas="1"), "spec.replicas", "not of type 'integer'"),
    ("ports a mapping", lambda d: _c(d).update(ports={"http": 8000}), "spec.template.spec.containers.0.ports",
     "not of type 'array'"),
    ("container without a name", lambda d: _c(d).pop("name"), "spec.template.spec.containers.0",
     "'name' is a required property"),
    ("apiVersion removed in 1.16", lambda d: d.update(apiVersion="apps/v1beta1"), "<root>",
     "Couldn't find schema for kind Deployment with api version apps/v1beta1"),
]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("break_it, path, message", [pytest.param(*b[1:], id=b[0]) for b in BROKEN_SCHEMA])
def test_the_schema_refuses_a_broken_deployment(break_it, path, message, version):
    dep = one("deployment.yaml", "Deployment")
    assert schema_error(dep, version) is None
    break_it(dep)
    err = schema_error(dep, version)
    assert err is not None and err.startswith(path + ":") and message in err, err


@pytest.mark.parametrize("path, kind, break_it, message", [
    pytest.param("hpa.yaml", "HorizontalPodAutoscaler", lambda d: _rename(d["spec"], "behavior", "behaviour"),
                 "'behaviour' was unexpected", id="hpa-behaviour"),
    pytest.param("service.yaml", "Service", lambda d: d["spec"]["ports"][0].update(port="8000"),
                 "not of type 'integer'", id="service-port-string"),
    pytest.param("grafana-dashboard.yaml", "ConfigMap", lambda d: d["data"].update(n=1),
                 "not of type 'string'", id="configmap-data-number"),
])
def test_the_schema_refuses_other_broken_kinds(path, kind, break_it, message):
    doc = one(path, kind)
    break_it(doc)
    err = schema_error(doc, KUBERNETES_VERSIONS[-1])
    assert err is not None and message in err, err


@pytest.mark.parametrize("path, kind, break_it, message", [
    pytest.param("servicemonitor.yaml", "ServiceMonitor", lambda d: _rename(d["metadata"], "labels", "label"),
                 "'label' was unexpected", id="servicemonitor-metadata"),
    pytest.param("kserve.yaml", "ServingRuntime",
                 lambda d: _rename(d["spec"]["containers"][0], "readinessProbe", "readinessprobe"),
                 "'readinessprobe' was unexpected", id="servingruntime-container"),
    pytest.param("kserve.yaml", "ServingRuntime",
                 lambda d: d["spec"]["containers"][0]["resources"]["limits"].update(cpu=[2]),
                 "is not valid under any of the given schemas", id="servingruntime-limits"),
])
def test_the_core_parts_of_a_crd_are_refused_broken(path, kind, break_it, message):
    doc = one(path, kind)
    break_it(doc)
    errs = [e for _, wrapped in core_parts(doc) if (e := schema_error(wrapped, KUBERNETES_VERSIONS[-1]))]
    assert len(errs) == 1 and message in errs[0], errs


BROKEN_BEYOND_SCHEMA = [  # (id, what to break in deployment.yaml, a word of the problem); each passes the schema
    ("probe port named nowhere", lambda d: _c(d)["readinessProbe"]["httpGet"].update(port="metrics"),
     "readinessProbe.httpGet.port 'metrics': no container port of that name"),
    ("port name not IANA", lambda d: _c(d)["ports"][0].update(name="HTTP_port"), "not an IANA service name"),
    ("port name twice", lambda d: _c(d)["ports"][1].update(name="http"), "port name 'http' twice"),
    ("protocol lowercase", lambda d: _c(d)["ports"][0].update(protocol="tcp"), "port protocol 'tcp'"),
    ("two probe handlers", lambda d: _c(d)["livenessProbe"].update(tcpSocket={"port": "http"}), "one handler"),
    ("memory '4 GB'", lambda d: _c(d)["resources"]["limits"].update(memory="4 GB"), "'4 GB' is not a quantity"),
    ("cpu request above limit", lambda d: _c(d)["resources"]["requests"].update(cpu="2500m"),
     "request 2500m above limit 2"),
    ("memory request above limit", lambda d: _c(d)["resources"]["requests"].update(memory="5Gi"),
     "request 5Gi above limit 4Gi"),
    ("gpu request != limit", lambda d: (_c(d)["resources"]["requests"].update({"nvidia.com/gpu": 1}),
                                        _c(d)["resources"]["limits"].update({"nvidia.com/gpu": 2})),
     "must equal its limit"),
    ("emptyDir sizeLimit", lambda d: d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].update(sizeLimit="1GB"),
     "sizeLimit '1GB'"),
    ("selector off the pod labels", lambda d: d["spec"]["selector"]["matchLabels"].update(variant="before"),
     "does not match the pod template's labels"),
    ("label value with a space", lambda d: d["metadata"]["labels"].update(team="ml serving"), "label team"),
    ("name with capitals", lambda d: d["metadata"].update(name="DWServe"), "metadata.name 'DWServe'"),
]


@pytest.mark.parametrize("break_it, message", [pytest.param(*b[1:], id=b[0]) for b in BROKEN_BEYOND_SCHEMA])
def test_beyond_the_schema_a_broken_deployment_is_refused(break_it, message):
    dep = one("deployment.yaml", "Deployment")
    every = [d for _, d in manifests()]
    assert problems(dep, every) == []
    break_it(dep)
    assert schema_error(dep, KUBERNETES_VERSIONS[-1]) is None, "this one is for problems(), not the schema"
    found = problems(dep, every)
    assert any(message in p for p in found), found


def test_a_service_targetport_no_pod_names_is_refused():
    every = [d for _, d in manifests()]
    svc = one("service.yaml", "Service")
    svc["spec"]["ports"][1]["targetPort"] = "grpc-web"
    found = problems(svc, every)
    assert any("targetPort 'grpc-web' is named by no container port of Deployment dwserve" in p for p in found), found
    svc["spec"]["selector"] = {"app.kubernetes.io/name": "dwserve", "variant": "canary"}
    assert any("selects no Deployment's pods" in p for p in problems(svc, every))
    sm = one("servicemonitor.yaml", "ServiceMonitor")
    sm["spec"]["endpoints"][0]["port"] = "metrics"
    assert any("endpoint port 'metrics'" in p for p in problems(sm, every))
    sm["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "dwserv"}
    assert any("selects no Service" in p for p in problems(sm, every))


def test_quantities_parse_as_kubernetes_reads_them():
    assert quantity("2") == 2 and quantity(2) == 2 and quantity("500m") == Decimal("0.5")
    assert quantity("4Gi") == 4 * 2**30 and quantity("1e3") == 1000 and quantity("1.5G") == 1.5e9
    assert quantity("2500m") > quantity("2") and quantity("5Gi") > quantity("4Gi")
    for bad in ("4 GB", "1GB", "Gi", "", "1.2.3", "-", "2gi"):
        assert quantity(bad) is None, bad
