"""Triton's `timeout` request parameter (microseconds) on OIP inference, REST and gRPC, through
tritonclient's own `infer(..., timeout=)`: a request still queued behind a busy model when its
timeout passes gets a 503 / UNAVAILABLE saying so and never runs; a long enough one is
answered; a bad value is a 400 naming the parameter (service/handlers/tensor.py)."""
import threading
import time

import numpy as np
import pytest

gc = pytest.importorskip("tritonclient.grpc")
import tritonclient.http as hc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.handlers.tensor import requested_timeout  # noqa: E402
from tests.grpc_fake_server import grpc_server  # noqa: E402

DELAY_S = 0.8          # each fake forward: long enough that a queued request's 0.1 s expires behind it


@pytest.mark.parametrize("value, want", [
    pytest.param(None, None, id="absent"),
    pytest.param(0, None, id="zero-is-the-server-limit"),
    pytest.param(250_000, 250_000, id="shorter"),
    pytest.param(20_000_000, None, id="equal-to-the-limit"),
    pytest.param(10**12, None, id="longer-never-extends"),
])
def test_requested_timeout_shortens_the_server_limit_only(value, want):
    assert requested_timeout(value, limit_s=20.0) == want


@pytest.mark.parametrize("value", [pytest.param(-1, id="negative"), pytest.param(1.5, id="float"),
                                   pytest.param(True, id="bool"), pytest.param("100", id="string"),
                                   pytest.param([1], id="list")])
def test_requested_timeout_refuses_what_is_not_microseconds(value):
    with pytest.raises(ValueError, match=r"parameters\.timeout: expected a non-negative integer of microseconds"):
        requested_timeout(value, limit_s=20.0)


@pytest.fixture(scope="module")
def slow():
    with grpc_server(delay_s=DELAY_S, max_batch_size=1, request_timeout_s=20) as s:
        yield s


def _ids(value):
    return np.full((1, 4), value, dtype=np.int64)


def _rest_infer(url, ids, **kw):
    client = hc.InferenceServerClient(url.split("://", 1)[1])
    inp = hc.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    return client.infer("lfm2", [inp], **kw)


def _grpc_infer(target, ids, **kw):
    client = gc.InferenceServerClient(target)
    inp = gc.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    return client.infer("lfm2", [inp], **kw)


def _ran(models) -> int:
    return len(models["lfm2"].calls)


def _busy(models, infer):
    """Start one request without a timeout and return its thread once the model runs it."""
    before = _ran(models)
    thread = threading.Thread(target=infer)
    thread.start()
    deadline = time.monotonic() + 10
    while _ran(models) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _ran(models) == before + 1, "the first request never reached the model"
    return thread


@pytest.mark.parametrize("front", ["rest", "grpc"])
def test_a_queued_request_past_its_timeout_is_refused_and_never_runs(slow, front):
    target, url, models = slow
    infer = (lambda ids, **kw: _rest_infer(url, ids, **kw)) if front == "rest" else \
        (lambda ids, **kw: _grpc_infer(target, ids, **kw))
    first = _busy(models, lambda: infer(_ids(1)))
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException) as err:
        infer(_ids(2), timeout=100_000)              # 0.1 s, behind a 0.8 s forward
    took = time.monotonic() - t0
    first.join(10)
    status = err.value.status()
    assert status == ("503" if front == "rest" else "StatusCode.UNAVAILABLE"), status
    assert "request timeout expired" in err.value.message() and "100000 us" in err.value.message()
    assert took < DELAY_S - 0.2, f"answered after {took:.2f} s: the timeout did not cut the wait"
    time.sleep(DELAY_S + 0.2)                      # the model is idle again: had it been queued, it ran by now
    ran_before = _ran(models)
    out = infer(_ids(3), timeout=5_000_000)        # 5 s: plenty for an idle model
    assert out.as_numpy("logits").shape[0] == 1
    assert _ran(models) == ran_before + 1


def test_the_timed_out_request_is_not_run_later(slow):
    """Counted directly: busy + timed-out request = one forward, not two."""
    target, url, models = slow
    before = _ran(models)
    first = _busy(models, lambda: _rest_infer(url, _ids(4)))
    with pytest.raises(InferenceServerException):
        _rest_infer(url, _ids(5), timeout=50_000)
    first.join(10)
    time.sleep(DELAY_S + 0.3)
    assert _ran(models) == before + 1


@pytest.mark.parametrize("front", ["rest", "grpc"])
def test_a_bad_timeout_is_a_400_naming_the_parameter(slow, front):
    target, url, models = slow
    before = _ran(models)
    with pytest.raises(InferenceServerException) as err:
        (_rest_infer if front == "rest" else _grpc_infer)(url if front == "rest" else target, _ids(6), timeout=-5)
    assert err.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), err.value.status()
    assert "parameters.timeout" in err.value.message()
    assert _ran(models) == before
