"""What no Kubernetes schema says about a manifest, checked by hand for
tests/test_deploy_k8s_schema.py: the rules the API server applies beyond its OpenAPI schema
(names, label syntax, port names, quantities, requests <= limits, one probe handler), and the
references the kubelet and the endpoints controller resolve only at run time (a probe's or a
Service's named port, a ServiceMonitor's Service port). Each rule is shown to fail there."""
from __future__ import annotations

import re
from decimal import Decimal

IANA_SVC_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")   # container / target port names
DNS1123_LABEL = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^(?=.{1,63}$)[a-z]([-a-z0-9]*[a-z0-9])?$")          # Service names
DNS1123_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": Decimal("1e-9"),
          "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "P": 10**15, "E": 10**18}
HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def quantity(q) -> Decimal | None:
    """A resource.Quantity's value, None when the API server would refuse it."""
    m = QUANTITY.match(str(q))
    if not m:
        return None
    suffix = m.group(2) or ""
    number = Decimal(str(q)[: len(str(q)) - len(suffix)])
    return number * Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else number * SUFFIX[suffix]


def containers(doc: dict) -> list[dict]:
    if doc["kind"] == "Deployment":
        pod = doc["spec"]["template"]["spec"]
        return pod.get("initContainers", []) + pod["containers"]
    if doc["kind"] == "ServingRuntime":
        return doc["spec"]["containers"]
    return []


def container_problems(c: dict) -> list[str]:
    out = []
    ports = c.get("ports", [])
    names = [p["name"] for p in ports if "name" in p]
    out += [f"port name {n!r}: not an IANA service name (a-z, 0-9, '-', 15 at most)" for n in names
            if not IANA_SVC_NAME.match(n)]
    out += [f"port name {n!r} twice" for n in set(names) if names.count(n) > 1]
    out += [f"containerPort {p['containerPort']} out of 1-65535" for p in ports
            if isinstance(p.get("containerPort"), int) and not 0 < p["containerPort"] < 65536]
    out += [f"port protocol {p['protocol']!r}" for p in ports if p.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP")]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in c:
            continue
        handlers = [h for h in HANDLERS if h in c[probe]]
        if len(handlers) != 1:
            out.append(f"{probe}: one handler of {HANDLERS}, not {handlers}")
        for h in handlers:
            port = c[probe][h].get("port")
            if isinstance(port, str) and port not in names:
                out.append(f"{probe}.{h}.port {port!r}: no container port of that name (have {names})")
            elif isinstance(port, int) and not 0 < port < 65536:
                out.append(f"{probe}.{h}.port {port} out of 1-65535")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for name, q in (res.get(part) or {}).items():
            if quantity(q) is None:
                out.append(f"resources.{part}.{name}: {q!r} is not a quantity")
    requests, limits = res.get("requests") or {}, res.get("limits") or {}
    for name in requests.keys() & limits.keys():
        r, lim = quantity(requests[name]), quantity(limits[name])
        if r is None or lim is None:
            continue
        if "/" in name and not name.split("/")[0].endswith("kubernetes.io") and r != lim:   # nvidia.com/gpu
            out.append(f"resources {name}: an extended resource's request must equal its limit ({r} != {lim})")
        elif r > lim:
            out.append(f"resources {name}: request {requests[name]} above limit {limits[name]}")
    return [f"container {c.get('name')}: {p}" for p in out]


def problems(doc: dict, every: list[dict]) -> list[str]:
    """What the API server (names, labels, quantities, ports, requests <= limits) or the kubelet
    and endpoints controller (named ports that resolve to nothing) refuse in `doc`; `every` is
    every document, for what a Service or a ServiceMonitor selects."""
    out = []
    meta = doc.get("metadata", {})
    name_re = DNS1035_LABEL if doc["kind"] == "Service" else DNS1123_SUBDOMAIN
    if not name_re.match(meta.get("name", "")):
        out.append(f"metadata.name {meta.get('name')!r}")
    labels = dict(meta.get("labels") or {})
    if doc["kind"] == "Deployment":
        labels |= doc["spec"]["template"]["metadata"].get("labels") or {}
        sel = doc["spec"]["selector"].get("matchLabels", {})
        if not sel.items() <= doc["spec"]["template"]["metadata"]["labels"].items():
            out.append("spec.selector does not match the pod template's labels")
    for k, v in labels.items():
        prefix, _, key = k.rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or not LABEL_NAME.match(key):
            out.append(f"label key {k!r}")
        if not isinstance(v, str) or (v and not LABEL_NAME.match(v)):
            out.append(f"label {k}: value {v!r}")
    for c in containers(doc):
        out += container_problems(c)
    if doc["kind"] == "Deployment":
        for v in doc["spec"]["template"]["spec"].get("volumes", []):
            size = (v.get("emptyDir") or {}).get("sizeLimit")
            if size is not None and quantity(size) is None:
                out.append(f"volume {v['name']}: sizeLimit {size!r} is not a quantity")
    if doc["kind"] == "Service":
        names = [p.get("name") for p in doc["spec"]["ports"]]
        out += [f"Service port name {n!r}" for n in names if n is not None and not DNS1123_LABEL.match(n)]
        out += [f"Service port name {n!r} twice" for n in set(names) if names.count(n) > 1]
        sel = doc["spec"].get("selector") or {}
        pods = [d for d in every if d["kind"] == "Deployment"
                and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if sel and not pods:
            out.append(f"Service selector {sel} selects no Deployment's pods")
        for p in doc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if isinstance(target, str):
                if not IANA_SVC_NAME.match(target):
                    out.append(f"Service port {p.get('name')}: targetPort {target!r} is not an IANA service name")
                for d in pods:
                    have = {cp.get("name") for c in containers(d) for cp in c.get("ports", [])}
                    if target not in have:
                        out.append(f"Service port {p.get('name')}: targetPort {target!r} is named by no container "
                                   f"port of Deployment {d['metadata']['name']} (have {sorted(filter(None, have))})")
    if doc["kind"] == "ServiceMonitor":
        sel = doc["spec"]["selector"].get("matchLabels", {})
        services = [d for d in every if d["kind"] == "Service"
                    and sel.items() <= d["metadata"].get("labels", {}).items()]
        if not services:
            out.append(f"ServiceMonitor selector {sel} selects no Service")
        for ep in doc["spec"]["endpoints"]:
            for s in services:
                if "port" in ep and ep["port"] not in {p.get("name") for p in s["spec"]["ports"]}:
                    out.append(f"ServiceMonitor endpoint port {ep['port']!r}: Service "
                               f"{s['metadata']['name']} has no such port")
    return out
