"""gRPC calls still running when the graceful shutdown period ends (service/grpc_server.py's
GrpcServer.stop): each is ended by the server with UNAVAILABLE, a message saying why and a
`retry-after` trailer, and counted 503 in dwserve_requests_total, as REST answers such requests
(middleware._cut). Left to grpc's own stop they were cut (the client saw CANCELLED or
UNAVAILABLE without a retry-after) and counted 499, as if the client had left.
A real server on loopback (uvicorn in this process, fake models with a slow forward)."""
import contextlib
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402

from service.testing import fake_hooks, fake_models  # noqa: E402
from server_process import fake_server_cmd, free_port, metric_sum, metric_value, server_process  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402

GRACE_S = 0.3
FORWARD_S = 3.0   # far past the grace: every call is still running when it ends


def _request(rid: str):
    tensor = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=[1, 3])
    tensor.contents.int64_contents.extend([1, 2, 3])
    return pb.ModelInferRequest(model_name="lfm2", id=rid, inputs=[tensor])


@contextlib.contextmanager
def _server():
    """-> (gRPC target, REST url, service); leaving it shuts the server down (the lifespan's
    stop_grpc with --graceful-shutdown-s GRACE_S)."""
    from service.app import create_app
    from service.settings import Settings

    # no warm-up: it would run FORWARD_S forwards before the server turns ready
    app = create_app(Settings(grpc_port=0, graceful_shutdown_s=GRACE_S, max_batch_size=1, warmup=False),
                     models=fake_models(delay_s=FORWARD_S), hooks=fake_hooks())
    service = app.state.service
    with in_process_server(app) as url:
        yield f"127.0.0.1:{service.grpc_port}", url, service


def _wait_inflight(url: str, n: int) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        if metric_sum(url, "dwserve_inflight_requests", model="lfm2") == n:
            return
        time.sleep(0.02)
    raise AssertionError(f"never {n} calls in flight")


def _assert_cut(code, details, trailers, answered_s):
    # answered at the grace's end (+ the time the cut answers get), not after the forward
    assert answered_s < GRACE_S + 1.5 < FORWARD_S, answered_s
    assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
    assert "graceful shutdown" in details and "--graceful-shutdown-s" in details, details
    assert trailers.get("retry-after") == "5", trailers


def _assert_counted_503(service, n: int):
    text = service.metrics.render().decode()
    assert metric_value(text, "dwserve_requests_total", impl="auto", model="lfm2", status="503") == n, text
    # (status 500 is exposed at 0 from a model's first count: service/metrics.py PRIMED_STATUSES)
    assert metric_value(text, "dwserve_requests_total", impl="auto", model="lfm2", status="499") == 0
    assert metric_value(text, "dwserve_requests_total", impl="auto", model="lfm2", status="500") == 0
    assert metric_value(text, "dwserve_inflight_requests", model="lfm2") == 0


def _call(stub, rid: str):
    """One ModelInfer -> (code or "ok", details, trailers, when it was answered)."""
    try:
        stub.ModelInfer(_request(rid), timeout=30)
        return "ok", "", {}, time.monotonic()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ()), time.monotonic()


def test_unary_calls_cut_by_shutdown_are_unavailable_with_retry_after_and_counted_503():
    with ThreadPoolExecutor(2) as pool:
        with _server() as (target, url, service):
            stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
            # one computing, one queued behind it (max_batch_size=1)
            calls = [pool.submit(_call, stub, f"r{i}") for i in range(2)]
            _wait_inflight(url, 2)
            t0 = time.monotonic()   # leaving the block shuts the server down
        outcomes = [f.result(timeout=30) for f in calls]
    for code, details, trailers, at in outcomes:
        _assert_cut(code, details, trailers, at - t0)
    _assert_counted_503(service, 2)


def test_a_stream_cut_by_shutdown_is_unavailable_with_retry_after_and_its_requests_503():
    hold = threading.Event()   # keeps the client's side of the stream open

    def requests():
        yield _request("s0")
        yield _request("s1")
        hold.wait(30)

    def read(call):
        answers = []
        try:
            for response in call:
                answers.append(response)
            return "ok", "", {}, time.monotonic(), answers
        except grpc.RpcError as exc:
            return (exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ()), time.monotonic(),
                    answers)

    with ThreadPoolExecutor(1) as pool:
        try:
            with _server() as (target, url, service):
                channel = grpc.insecure_channel(target)
                call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests())
                reader = pool.submit(read, call)
                _wait_inflight(url, 2)
                t0 = time.monotonic()
            code, details, trailers, at, answers = reader.result(timeout=30)
        finally:
            hold.set()
    _assert_cut(code, details, trailers, at - t0)
    assert answers == []   # nothing finished: no answer, only the stream's status
    _assert_counted_503(service, 2)


@pytest.mark.parametrize("grace_s", [pytest.param(0, id="zero-grace"), pytest.param(GRACE_S, id="short-grace")])
def test_sigterm_answers_running_grpc_calls_before_the_process_exits(grace_s):
    """The real server process (cli.run_server): after the lifespan's drain uvicorn re-raises
    SIGTERM and the process ends at once, so the cut calls' answers must be out by then."""
    grpc_port = free_port()
    cmd = fake_server_cmd(max_batch_size=1, grpc_port=grpc_port, graceful_shutdown_s=grace_s, warmup=0)
    with server_process(cmd + ["--delay-s", str(FORWARD_S)], timeout=60) as (url, proc):
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))

        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(_call, stub, f"r{i}") for i in range(2)]
            _wait_inflight(url, 2)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            outcomes = [f.result(timeout=30) for f in calls]
        assert proc.wait(30) == 0   # drained: a clean stop (tests/test_cli_serve_signals.py)
    for code, details, trailers, at in outcomes:
        _assert_cut(code, details, trailers, at - t0)
    proc.output.thread.join(5)
    assert "were answered UNAVAILABLE" in proc.output.tail(100_000), proc.output.tail()
