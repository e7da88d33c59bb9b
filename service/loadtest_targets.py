"""`dwserve loadtest`'s targets: which URLs it may load (loopback unless --allow-remote), and
what it reads from each server around the load: readiness, model metadata, and kernel launches
per forward from /metrics (service/loadtest.py runs the load)."""
from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# Every request goes straight to the target: httpx would otherwise follow HTTP(S)_PROXY /
# ALL_PROXY from the environment (loopback included), sending the load to the proxy's host
# past the loopback check, and timing the proxy too. And it asks for replies as they are:
# httpx asks for gzip by default, and compressing LFM2's JSON logits (~1.3 MB, ~17 ms) would
# load the server's cores with work that is neither model's and blur the before/after.
DIRECT = {"trust_env": False, "headers": {"Accept-Encoding": "identity"}}


@dataclass(frozen=True)
class Target:
    label: str                 # "before"/"after", or the impl name in one-target mode
    url: str                   # server root, e.g. http://127.0.0.1:8001
    impl: str | None = None    # parameters.depthwise_impl to send (None: server default)


def check_url(url: str, allow_remote: bool) -> str:
    """Normalise a target URL; refuse anything but loopback unless allow_remote."""
    try:
        parts = urlsplit(url)
        parts.port   # raises on a port that is not a number in 0..65535
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target {url!r}: expected http://HOST:PORT (e.g. http://127.0.0.1:8000)")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: not resolved, so not known to be local
        loopback = False
    if not loopback and not allow_remote:
        raise ValueError(f"target {url!r} is not loopback (127.0.0.0/8, ::1, localhost); "
                         "pass --allow-remote to load a server you own elsewhere")
    return url.rstrip("/")


def wait_ready(urls: list[str], timeout: float) -> None:
    """Block until every target's /v2/health/ready is 200 (all its models built and warmed up),
    before any is measured: a server still warming a model (or the other target warming up)
    shares the CPU with the one being measured, and `dwserve serve ... &` followed at once by
    `dwserve loadtest` (the README's sequence) finds the servers still starting."""
    deadline = time.monotonic() + timeout
    note_at = time.monotonic() + 10
    pending = dict.fromkeys(urls, "no answer yet")
    while True:
        for url in list(pending):
            try:
                r = httpx.get(f"{url}/v2/health/ready", timeout=2, **DIRECT)
            except httpx.HTTPError as exc:
                pending[url] = type(exc).__name__
                continue
            if r.status_code == 200:
                del pending[url]
            else:
                pending[url] = f"HTTP {r.status_code}"
        if not pending:
            return
        if time.monotonic() >= deadline:
            names = "; ".join(f"{u} ({why})" for u, why in pending.items())
            raise SystemExit(f"dwserve loadtest: {names} not ready after {timeout:g} s; start it with "
                             "`dwserve serve` (models build and warm up for minutes on small CPUs: "
                             "raise --ready-timeout)")
        if time.monotonic() >= note_at:
            print(f"waiting for {', '.join(pending)} to be ready ...", file=sys.stderr)
            note_at += 10
        time.sleep(0.25)


def server_info(url: str, model: str, timeout: float) -> dict:
    """Model metadata (vocab_size, server default impl); a clear error if the server is not up."""
    try:
        r = httpx.get(f"{url}/v2/models/{model}", timeout=timeout, **DIRECT)
    except httpx.HTTPError as exc:
        raise SystemExit(f"dwserve loadtest: cannot reach {url} ({exc}); start it with `dwserve serve`")
    if r.status_code != 200:
        raise SystemExit(f"dwserve loadtest: {url} does not serve {model!r} (HTTP {r.status_code}: {r.text[:200]})")
    return r.json().get("parameters") or {}


def scrape_launches(url: str, model: str, impls: set[str]) -> dict[str, float]:
    """dwserve_kernel_launches_per_forward{model, impl in impls} by kind, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        text = httpx.get(f"{url}/metrics", timeout=10, **DIRECT).text
    except httpx.HTTPError:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "dwserve_kernel_launches_per_forward":
            for s in fam.samples:
                if s.labels.get("model") == model and s.labels.get("impl") in impls:
                    out[s.labels["kind"]] = s.value
    return out
