"""docker/: the images run dwserve as non-root with a readiness HEALTHCHECK, and docker-compose
accepts the stack (and its GPU override) as written in the README."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = shutil.which("docker-compose")


def compose_config(*files: str, profile: str | None = None, env: dict | None = None) -> dict:
    """`docker-compose config` of docker/FILES (env: its whole environment; None: this one's)."""
    args = [COMPOSE] + [a for f in files for a in ("-f", str(DOCKER / f))]
    args += ["--profile", profile] if profile else []
    r = subprocess.run(args + ["config"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile(name):
    text = (DOCKER / name).read_text()
    assert "USER dwserve" in text and "useradd" in text
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in text and 'ENTRYPOINT ["dwserve"]' in text
    assert "torch==${TORCH_VERSION}" in text
    assert "DWSERVE_GRPC_PORT=8001" in text and "EXPOSE 8000 8001" in text   # REST and gRPC
    if name.endswith("cuda"):
        assert "nvidia/cuda" in text and "[gpu]" in text
    else:
        assert "python:3" in text and "/whl/cpu" in text


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in (DOCKER / name).read_text().splitlines() if not ln.lstrip().startswith("#")]
    out = []
    for ln in "\n".join(lines).replace("\\\n", " ").splitlines():
        if ln.strip():
            op, _, rest = ln.strip().partition(" ")
            out.append((op.upper(), rest))
    return out


@pytest.mark.parametrize("name, extras", [("Dockerfile", []), ("Dockerfile.cuda", ["gpu"])])
def test_dockerfile_installs_dependencies_before_copying_the_code(name, extras, tmp_path):
    """Layer caching: the dependencies are installed from pyproject.toml alone, so an edit to
    models/, service/ or README.md rebuilds only the project layer, not grpcio, matplotlib and
    the rest. The requirements the image installs are exactly pyproject's (+ the extras)."""
    import tomllib

    ins = instructions(name)
    code = min(i for i, (op, args) in enumerate(ins)
               if op == "COPY" and any(w in args.split()[:-1] for w in ("README.md", "models", "service", ".")))
    deps = [i for i, (op, args) in enumerate(ins) if op == "RUN" and "pip install -r" in args]
    assert len(deps) == 1 and deps[0] < code, (name, ins)
    assert [args for op, args in ins[:deps[0]] if op == "COPY"] == ["pyproject.toml ./"], name
    project = [args for op, args in ins[code:] if op == "RUN" and "pip install" in args]
    assert len(project) == 1 and "--no-deps" in project[0] and "pip check" in project[0], project
    # Run the image's own requirements step against the repository's pyproject.toml.
    script = re.search(r'python3? -c "([^"]+)" > (\S+)', ins[deps[0]][1])
    r = subprocess.run([sys.executable, "-c", script.group(1)], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = meta["dependencies"] + [d for e in extras for d in meta["optional-dependencies"][e]]
    assert r.stdout.splitlines() == wanted


def test_dockerignore_keeps_what_the_image_needs():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv"} <= ignored
    assert not {"models", "service", "pyproject.toml", "README.md"} & ignored


def _port(spec) -> tuple[str, int]:
    """(host ip, container port) of one `ports` entry as `docker-compose config` prints it: a
    string "[ip:]published:target[/proto]" or a mapping (newer releases)."""
    if isinstance(spec, dict):
        return spec.get("host_ip", "0.0.0.0"), int(spec["target"])
    parts = str(spec).split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else "0.0.0.0"), int(parts[-1])


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose)")
def test_compose_stack_is_accepted():
    cfg = compose_config("docker-compose.yml", profile="loadtest")
    svcs = cfg["services"]
    assert set(svcs) == {"dwserve-before", "dwserve-after", "prometheus", "grafana", "loadtest"}
    assert svcs["dwserve-before"]["environment"]["DWSERVE_DEPTHWISE_IMPL"] == "per_group"
    assert svcs["dwserve-after"]["environment"]["DWSERVE_DEPTHWISE_IMPL"] == "auto"
    # every published port on this host's loopback only: the dwserve ports have no API key set,
    # Grafana is an anonymous admin, Prometheus takes --web.enable-lifecycle's quit
    published = {name: [_port(p) for p in svc.get("ports", [])] for name, svc in svcs.items()}
    assert all(host == "127.0.0.1" for ports in published.values() for host, _ in ports), published
    assert {t for _, t in published["grafana"]} == {3000} and {t for _, t in published["prometheus"]} == {9090}
    for name in ("dwserve-before", "dwserve-after"):   # REST and gRPC both published
        env = svcs[name]["environment"]
        targets = {t for _, t in published[name]}
        assert targets == {int(env["DWSERVE_PORT"]), int(env["DWSERVE_GRPC_PORT"])}, name
        # torch's thread pool sized to the CPU cap, not to the host's cores
        assert float(env["DWSERVE_TORCH_THREADS"]) == float(svcs[name]["cpus"]), name
    vols = " ".join(svcs["prometheus"]["volumes"] + svcs["grafana"]["volumes"])
    for path in ["deploy/prometheus/prometheus.yml", "deploy/prometheus/rules", "deploy/grafana/provisioning",
                 "deploy/grafana/dashboards"]:
        assert str(ROOT / path) in vols, path
    assert (ROOT / "deploy/grafana/dashboards/dwserve.json").is_file()
    g = svcs["grafana"]["environment"]
    assert g["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin" and g["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].endswith("dwserve.json")
    lt = svcs["loadtest"]
    assert lt["profiles"] == ["loadtest"] and any(a.startswith("--run-time=") for a in lt["command"])
    assert "--headless" in lt["command"] and not any(a.startswith("--host") for a in lt["command"])


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose)")
def test_stop_waits_for_dwserves_own_shutdown():
    """`docker compose stop/down` SIGKILLs after stop_grace_period (10 s when unset); dwserve's
    drain takes up to --graceful-shutdown-s (30 s) + CUT_ANSWERS_S before it exits."""
    from service.cli import CUT_ANSWERS_S
    from service.settings import Settings

    svcs = compose_config("docker-compose.yml")["services"]
    for name in ("dwserve-before", "dwserve-after"):
        env = svcs[name]["environment"]
        grace = float(env.get("DWSERVE_GRACEFUL_SHUTDOWN_S", Settings.model_fields["graceful_shutdown_s"].default))
        m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(svcs[name].get("stop_grace_period", "10s")))
        assert m, svcs[name].get("stop_grace_period")
        assert 60 * int(m.group(1) or 0) + int(m.group(2) or 0) >= grace + CUT_ANSWERS_S + 3, name


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose)")
def test_gpu_override_is_accepted():
    svcs = compose_config("docker-compose.yml", "docker-compose.gpu.yml")["services"]
    for name in ["dwserve-before", "dwserve-after"]:
        s = svcs[name]
        assert s["build"]["dockerfile"] == "docker/Dockerfile.cuda" and s["environment"]["DWSERVE_DEVICE"] == "cuda"
        (dev,) = s["deploy"]["resources"]["reservations"]["devices"]
        assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]


def test_locustfile_builds_valid_requests(monkeypatch):
    """Loaded against a stub `locust`: importing the real one gevent-patches ssl/socket for the
    whole pytest process and breaks every later test."""
    import importlib.util
    import json
    import random
    import types

    stub = types.ModuleType("locust")
    stub.HttpUser = type("HttpUser", (), {})
    stub.between = lambda a, b: None
    stub.task = lambda weight: (lambda f: f)
    stub.events = types.SimpleNamespace(init=types.SimpleNamespace(add_listener=lambda f: f))
    monkeypatch.setitem(__import__("sys").modules, "locust", stub)
    spec = importlib.util.spec_from_file_location("dwserve_locustfile", DOCKER / "locustfile.py")
    lf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lf)
    body = lf.lfm2_body(random.Random(0))
    (inp,) = body["inputs"]
    assert inp["datatype"] == "INT64" and len(inp["data"]) == inp["shape"][0] * inp["shape"][1]
    from service.schemas import GenerateRequest
    gen = GenerateRequest.model_validate(lf.generate_body(random.Random(0)))
    assert gen.ignore_eos and gen.max_new_tokens == lf.GENERATE_TOKENS and all(0 <= i < 256 for i in gen.input_ids)
    payload, headers = lf.mobilenet_binary(random.Random(0))
    n = int(headers["Inference-Header-Content-Length"])
    header = json.loads(payload[:n])
    assert len(payload) - n == header["inputs"][0]["parameters"]["binary_data_size"] == 3 * 224 * 224 * 4
    assert lf.Before.host != lf.After.host and "host" not in vars(lf._Variant)



def test_cpu_image_has_the_cxx_compiler_the_compiled_impl_needs(monkeypatch):
    """On CPU the `compiled` impl is inductor's generated C++, and auto picks it on big shapes
    where a compiler is found (models/depthwise/auto.py compiled_allowed). python:3.11-slim
    ships none: in the CPU image every request with parameters.depthwise_impl=compiled
    answered 500 (InvalidCxxCompiler), and auto ran another rule than the benchmarks'."""
    from models.depthwise import auto

    ins = instructions("Dockerfile")
    user = next(i for i, (op, _) in enumerate(ins) if op == "USER")
    installed = {w for op, args in ins[:user] if op == "RUN" and "apt-get install" in args
                 for w in args.split("apt-get install", 1)[1].split("&&", 1)[0].split() if not w.startswith("-")}
    assert "g++" in installed, sorted(installed)
    # and auto's probe finds what the package puts on PATH (CXX unset in the image)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(auto.shutil, "which", lambda c: "/usr/bin/g++" if c == "g++" else None)
    auto._cxx_available.cache_clear()
    try:
        assert auto._cxx_available()
    finally:
        auto._cxx_available.cache_clear()
