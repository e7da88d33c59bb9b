"""`dwserve serve`'s checks before anything starts: each invalid setting as one line naming
the flag or DWSERVE_* variable the operator gave, and what cannot be served (device, models,
the fused impl off CUDA, ports) found in a second, before the port is bound or a weight is read.
Each returns lines for the CLI to print; an empty list means go on.
"""
from __future__ import annotations

import difflib
import socket
from typing import Mapping, Optional

from pydantic import ValidationError

from .settings import Settings, expected


def _source(field: str, from_flags: set) -> str:
    """Where a setting came from, as the operator typed it: its flag or its DWSERVE_* variable."""
    if field in from_flags:
        return "--model" if field == "models" else "--" + field.replace("_", "-")
    return "DWSERVE_" + field.upper()


def _given(field: str, value, from_flags: set) -> str:
    """A setting as the operator gave it: `--flag value` (a switch: `--flag` or `--no-flag`) or
    `DWSERVE_NAME='value'`."""
    if field not in from_flags:
        return f"{_source(field, from_flags)}={value!r}"
    if isinstance(value, bool):
        return _source(field, from_flags).replace("--", "--" if value else "--no-", 1)
    return f"{_source(field, from_flags)} {value}"


# DWSERVE_* variables that are not serve settings: other tools of the project read them, so
# `dwserve serve` does not warn about them (unknown_variables). Name -> the file that reads it
# (tests/test_cli_serve_unknown_env.py checks each is still read there, and that nothing else is).
NOT_SETTINGS = {
    "DWSERVE_CPUS": "docker/docker-compose.yml",            # cores per before/after variant
    "DWSERVE_CPUSET_BEFORE": "docker/docker-compose.yml",   # the variants' and tools' cpusets
    "DWSERVE_CPUSET_AFTER": "docker/docker-compose.yml",
    "DWSERVE_CPUSET_TOOLS": "docker/docker-compose.yml",
    "DWSERVE_GPU_BEFORE": "docker/docker-compose.gpu.yml",  # the GPU of each variant
    "DWSERVE_GPU_AFTER": "docker/docker-compose.gpu.yml",
    "DWSERVE_BEFORE_URL": "docker/locustfile.py",           # the load test's targets and requests
    "DWSERVE_AFTER_URL": "docker/locustfile.py",
    "DWSERVE_LFM2_TOKENS": "docker/locustfile.py",
    "DWSERVE_LFM2_VOCAB": "docker/locustfile.py",
    "DWSERVE_GENERATE_TOKENS": "docker/locustfile.py",
    "DWSERVE_AUTO_COMPILED": "models/depthwise/auto.py",     # auto's opt-out of the compiled impl
    "DWSERVE_TRITON_DIRECT_LAUNCH": "models/depthwise/triton_launch.py",   # fused kernels' launch path
    "DWSERVE_TRITON_INT_POINTERS": "models/depthwise/triton_launch.py",    # tensors' addresses to the launcher
    "DWSERVE_TRITON_C_LAUNCH": "models/depthwise/triton_launch.py",        # the launcher's C function, past its __call__
    "DWSERVE_NHWC_STRIPS": "models/depthwise/triton_conv2d.py",   # NHWC 3x3: the strip kernel or per-pixel
    "DWSERVE_NHWC_TWO_ROW_STRIPS": "models/depthwise/triton_conv2d.py",   # two-row strips among the tuner's picks
    "DWSERVE_NCHW_STRIPS": "models/depthwise/triton_conv2d.py",   # NCHW 3x3: the strip kernel or the generic one
    "DWSERVE_CONV1D_STRIPS": "models/depthwise/triton_conv1d.py",   # (B, C, L) conv1d: the strip kernel or generic
    "DWSERVE_WIDE_HALF_STRIPS": "models/depthwise/triton_vectors.py",   # 2-byte dtypes: 8-wide strips or 4-wide
    "DWSERVE_PERF": "tests/test_lfm2_perf.py",               # the timing tests' switch
    "DWSERVE_TOPOLOGY_FAKE": "tests/test_topology.py",       # the topology test on fake models
}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning line per DWSERVE_* variable that is neither a setting nor in NOT_SETTINGS,
    naming the closest setting (a misspelt DWSERVE_MAX_BATCH was silently ignored). Names in
    any case, as pydantic-settings reads them; a warning only, since other tools share the prefix."""
    settings = {name.upper(): "DWSERVE_" + name.upper() for name in Settings.model_fields}
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("DWSERVE_") or upper[len("DWSERVE_"):] in settings or upper in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(upper[len("DWSERVE_"):], list(settings), n=1)
        hint = f"; did you mean {settings[close[0]]}?" if close else " (dwserve serve --help lists the settings)"
        lines.append(f"dwserve serve: warning: {name} is not a setting and is ignored{hint}")
    return lines


def settings_errors(exc: ValidationError, from_flags: set) -> list[str]:
    """One line per invalid setting, naming the flag or variable, its value, what it takes."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        lines.append(f"dwserve serve: invalid settings: {_given(field, error.get('input'), from_flags)}: "
                     f"{expected(field, error)}")
    return lines


def preflight(settings: Settings, from_flags: set) -> list[str]:
    """What cannot be served, found in a second, before the port is bound: the device, each
    --model's name and path (models.registry.check_source: no weights read), the fused impl
    off CUDA, the ports. The loader thread found them after uvicorn was up, with a traceback."""
    import os

    from models.placement import parse_device
    from models.registry import check_source

    errors, device = [], None
    try:
        device = parse_device(settings.device, default="auto")
    except ValueError as exc:
        errors.append(f"{_given('device', settings.device, from_flags)}: {exc}")
    for entry, (name, path) in zip(settings.models, settings.model_entries()):
        try:
            check_source(name, path)
        except ValueError as exc:
            errors.append(f"{_given('models', entry, from_flags)}: {exc}")
    if (settings.depthwise_impl == "fused" and device is not None and device.type != "cuda"
            and os.environ.get("TRITON_INTERPRET") != "1"):
        errors.append(f"{_given('depthwise_impl', 'fused', from_flags)}: the fused impl needs a CUDA "
                      "device (Triton kernels); on CPU use auto, slice_sum or native")
    if settings.depthwise_impl == "compiled" and device is not None and device.type == "cpu":
        from .runtime import compiled_unavailable
        if why := compiled_unavailable():
            errors.append(f"{_given('depthwise_impl', 'compiled', from_flags)}: the compiled impl {why}")
    try:   # a taken port: uvicorn's exit 3 after the models began loading; gRPC's, a traceback
        socket.getaddrinfo(settings.host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return ["dwserve serve: " + e for e in errors] + [
            f"dwserve serve: {_given('host', settings.host, from_flags)}: cannot resolve it ({exc.strerror})"]
    for field in ("port", "grpc_port"):
        port = getattr(settings, field)
        if field == "grpc_port" and port is not None and port == settings.port != 0:
            errors.append(f"{_given(field, port, from_flags)}: the HTTP port is {port} too; give gRPC another")
        elif port and (problem := _cannot_listen(settings.host, port)):
            errors.append(f"{_given(field, port, from_flags)}: {problem}")
    return ["dwserve serve: " + e for e in errors]


def _cannot_listen(host: str, port: int) -> Optional[str]:
    """Why (host, port) cannot be listened on, or None: a trial bind, as uvicorn binds."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]   # as a URL writes it
            return f"cannot listen on {host}:{port} ({exc.strerror}); pick another port"
    return None
