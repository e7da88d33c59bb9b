"""gRPC's standard health service on --grpc-port (service/grpc_health.py), as Kubernetes' grpc
probes and grpc-health-probe call it: NOT_SERVING until the models are warm, SERVING once
/v2/health/ready is 200, NOT_SERVING from the start of shutdown, with Watch streams told each
change and ended at shutdown (an open Watch must not hold the shutdown for its grace period).
A real server on loopback (uvicorn in this process, fake models whose warm-up forward is slow)."""
import contextlib
import queue
import threading
import time

import httpx
import pytest

grpc = pytest.importorskip("grpc")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
from grpc_health.v1 import health_pb2_grpc  # noqa: E402

from service.testing import fake_hooks, fake_models  # noqa: E402
from server_process import free_port  # noqa: E402

WARMUP_S = 0.3       # each fake forward's delay: readiness comes after the warm-up forwards (~13)
GRACE_S = 20.0       # --graceful-shutdown-s: far longer than the shutdown may take here
S = health_pb2.HealthCheckResponse


@contextlib.contextmanager
def _starting_server():
    """uvicorn in a thread, yielded as soon as the gRPC port is bound (models still warming
    up) -> (gRPC target, REST url, service, the uvicorn server)."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(grpc_port=0, graceful_shutdown_s=GRACE_S),
                     models=fake_models(delay_s=WARMUP_S), hooks=fake_hooks())
    service = app.state.service
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 10
        while service.grpc_port is None and time.time() < deadline:
            time.sleep(0.01)
        yield f"127.0.0.1:{service.grpc_port}", f"http://127.0.0.1:{port}", service, server
    finally:
        server.should_exit = True
        thread.join(GRACE_S + 5)


def _check(stub, name=""):
    return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status


def test_health_follows_readiness_and_watch_ends_at_shutdown():
    with _starting_server() as (target, url, service, server), grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert not service.ready
        assert _check(stub) == S.NOT_SERVING
        assert _check(stub, "inference.GRPCInferenceService") == S.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            _check(stub, "nope")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "inference.GRPCInferenceService" in err.value.details()

        seen, ended = queue.Queue(), threading.Event()

        def watch():
            for answer in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                seen.put(answer.status)
            ended.set()

        threading.Thread(target=watch, daemon=True).start()
        assert seen.get(timeout=5) == S.NOT_SERVING
        assert seen.get(timeout=60) == S.SERVING      # pushed when the warm-up ends
        assert httpx.get(url + "/v2/health/ready").status_code == 200
        assert _check(stub) == _check(stub, "inference.GRPCInferenceService") == S.SERVING

        stopped_at = time.monotonic()
        service.stop_accepting()               # what SIGTERM does first (cli.run_server)
        assert seen.get(timeout=5) == S.NOT_SERVING
        assert ended.wait(5), "the Watch stream stayed open after shutdown began"
        server.should_exit = True
    # nothing else was running: the open Watch did not hold the shutdown for GRACE_S
    assert time.monotonic() - stopped_at < GRACE_S / 2
