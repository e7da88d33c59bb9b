"""A `dwserve serve` process on a free loopback port, for the tests that need a real server:
the real models (test_service_server) or the fake ones (`fake_server_cmd`: test_service_process,
test_serve_connections). The server's output is drained as it comes (see OutputDrain)."""
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent


def send_json_post(sock: socket.socket, path: str, body: bytes) -> None:
    """One POST of a JSON body on a raw socket (the tests that pipeline, stall or leave)."""
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (path.encode(), len(body), body))


def metric_value(text: str, name: str, **labels) -> float:
    """The sum of a /metrics page's samples of `name` (a sample's name: `..._total`, `..._count`)
    whose labels include `labels`; 0 when none."""
    want = labels.items()
    return sum((s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == name and want <= s.labels.items()), 0.0)


def metric_sum(url: str, name: str, **labels) -> float:
    """metric_value of the /metrics page the server at `url` serves now."""
    return metric_value(httpx.get(url + "/metrics").text, name, **labels)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OutputDrain:
    """Reads a server's output as it comes, keeping the last lines for error messages. An
    undrained pipe fills at 64 KiB, and then whichever server thread logs next blocks for
    good (a burst of tracebacks once froze the generation scheduler in this very test)."""

    def __init__(self, stream):
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)

    def tail(self, chars: int = 3000) -> str:
        return "".join(self.lines)[-chars:]


def wait_http_ok(url: str, timeout_s: float) -> None:
    """Until GET `url` answers 200 (a server started in this process: no process to watch, only
    the clock); asked at least once, however short `timeout_s`."""
    deadline = time.time() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        assert time.time() < deadline, f"{url} not ready in {timeout_s} s"
        time.sleep(0.1)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, output: OutputDrain) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            output.thread.join(5)
            raise AssertionError(f"server exited with {proc.returncode}:\n{output.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server not ready after {timeout}s:\n{output.tail()}")


@contextlib.contextmanager
def server_process(args: list[str], timeout: float, **popen):
    """popen: more subprocess.Popen arguments (preexec_fn, ...)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    # conftest sets TRITON_INTERPRET=1 for kernel tests; a server must not inherit it, or a
    # fuzzer's `depthwise_impl: fused` would run a whole model in the Triton interpreter.
    # Without it, `fused` on a CPU server is a 400 like on any real deployment.
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.Popen([*args, "--port", str(port)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)
    output = proc.output = OutputDrain(proc.stdout)   # the test may read what the server logged
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout, output)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def cli_flags(limits: dict) -> list[str]:
    return [x for k, v in limits.items() for x in (f"--{k}", str(v))]


def fake_server_cmd(**limits) -> list[str]:
    return [sys.executable, "-c", "from service.testing import serve_fake; serve_fake()",
            *cli_flags({k.replace("_", "-"): v for k, v in limits.items()})]


def client_ready(client, timeout: float = 20):
    """An in-process client (TestClient) once /v2/health/ready is 200 -> the client."""
    deadline = time.time() + timeout
    while client.get("/v2/health/ready").status_code != 200:
        assert time.time() < deadline, "never ready"
        time.sleep(0.02)
    return client
