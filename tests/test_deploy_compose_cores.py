"""docker/docker-compose.yml: the before/after variants run on cores of their own.

Locust loads both variants at once, and `cpus:` is a share of CPU time, not reserved cores: on
a host with fewer cores than both variants' threads, "before"'s per_group work slowed "after"
in Grafana. Each variant is pinned (cpuset) to DWSERVE_CPUS cores of its own, set by env vars;
`docker-compose config` (no Docker engine needed) shows what the engine would get."""
import os
from pathlib import Path

import pytest
from test_deploy_docker import COMPOSE, compose_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose)")
VARIANTS = ("dwserve-before", "dwserve-after")
TOOLS = ("prometheus", "grafana", "loadtest")
KNOBS = ("DWSERVE_CPUS", "DWSERVE_CPUSET_BEFORE", "DWSERVE_CPUSET_AFTER", "DWSERVE_CPUSET_TOOLS")


def config(**env: str) -> dict:
    """The services as compose resolves them, with only `env` of the knobs set."""
    environ = {k: v for k, v in os.environ.items() if k not in KNOBS} | env
    return compose_config(COMPOSE_FILE.name, profile="loadtest", env=environ)["services"]


def cores(cpuset) -> set[int]:
    """Docker's cpuset syntax ("0,1", "0-3", "0-1,6") -> core numbers."""
    out = set()
    for part in str(cpuset).split(","):
        lo, _, hi = part.strip().partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    return out


@needs_compose
def test_variants_are_pinned_to_disjoint_cores_by_default():
    svcs = config()
    pinned = {name: cores(svcs[name].get("cpuset", "")) for name in VARIANTS if svcs[name].get("cpuset")}
    assert set(pinned) == set(VARIANTS), "each variant needs a cpuset, not only a `cpus:` share"
    assert not pinned["dwserve-before"] & pinned["dwserve-after"], pinned
    for name in VARIANTS:   # as many cores as torch threads and the `cpus` cap
        threads = int(svcs[name]["environment"]["DWSERVE_TORCH_THREADS"])
        assert len(pinned[name]) == threads == float(svcs[name]["cpus"]), (name, pinned[name], threads)


@needs_compose
def test_cores_are_set_by_env():
    svcs = config(DWSERVE_CPUS="3", DWSERVE_CPUSET_BEFORE="0-2", DWSERVE_CPUSET_AFTER="4,5,6",
                  DWSERVE_CPUSET_TOOLS="7")
    assert cores(svcs["dwserve-before"]["cpuset"]) == {0, 1, 2}
    assert cores(svcs["dwserve-after"]["cpuset"]) == {4, 5, 6}
    for name in VARIANTS:
        assert svcs[name]["environment"]["DWSERVE_TORCH_THREADS"] == "3" and float(svcs[name]["cpus"]) == 3
    for name in TOOLS:   # Locust, Prometheus, Grafana off the measured cores when asked
        assert cores(svcs[name]["cpuset"]) == {7}, name


@needs_compose
def test_tools_float_by_default():
    """Pinning Locust/Prometheus/Grafana by default would stop the stack on hosts without that
    core (docker refuses a cpuset the host lacks); unset, they may run on any core."""
    svcs = config()
    for name in TOOLS:
        assert not svcs[name].get("cpuset"), name


def test_docs_say_what_the_comparison_needs():
    compose = COMPOSE_FILE.read_text()
    readme = (ROOT / "README.md").read_text()
    for text, where in ((compose, "docker-compose.yml"), (readme, "README.md")):
        for needle in ("DWSERVE_CPUSET_BEFORE", "DWSERVE_CPUSET_AFTER", "DWSERVE_CPUSET_TOOLS", "in turns"):
            assert needle in text, (where, needle)
