"""benchmarks/http_load.py (and grpc_load.py) against a port nothing listens on: each client
backs off (bounded, never past the window) instead of retrying at once, and every try is an
error. It used to retry instantly: a refused connection returns in microseconds, so each client
spun a core for the whole window (taking it from a server sharing the box) and piled up
hundreds of thousands of records."""
import socket
import time

import pytest

from benchmarks import http_load

REQUEST = ("/v2/models/lfm2/infer", b"{}", {"Content-Type": "application/json"})
CLIENTS, WINDOW_S = 2, 1.0


@pytest.fixture
def closed_port():
    """A loopback port bound but not listening (so no one else takes it): connect is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def tries_bound() -> int:
    """Tries one client can make in the window with the backoff: the waits double from the
    first to the cap, then stay there."""
    lo, hi = http_load.NO_ANSWER_BACKOFF_S
    n, t, wait = 0, 0.0, lo
    while t < WINDOW_S:
        n, t, wait = n + 1, t + wait, min(2 * wait, hi)
    return n + 1


def measure(fn):
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu0, time.perf_counter() - wall0


def test_refused_connections_back_off_and_count_as_errors(closed_port):
    (records, window), cpu, wall = measure(lambda: http_load._load_window(
        f"http://127.0.0.1:{closed_port}", REQUEST, CLIENTS, WINDOW_S, 0.0))
    assert window == WINDOW_S and wall < WINDOW_S + 1.0          # the window still bounds it
    assert records and {r[2] for r in records} == {http_load.NO_ANSWER}
    assert len(records) <= CLIENTS * tries_bound(), len(records)  # was ~10^5
    assert cpu < 0.3 * WINDOW_S, f"clients used {cpu:.2f} s of CPU in a {WINDOW_S} s window"
    with pytest.raises(RuntimeError, match=r"statuses \[0\].*is the server up"):
        http_load.summarize(records, window, CLIENTS)


def test_an_answer_resets_the_backoff():
    """A server that answers after refusing: its answers come back to back again, no waits."""
    calls = []

    def make_sender():
        import contextlib

        @contextlib.contextmanager
        def sender():
            def send():
                calls.append(time.perf_counter())
                return (http_load.NO_ANSWER, "") if len(calls) <= 3 else (200, "")
            yield send
        return sender()

    records, _ = http_load.closed_loop(make_sender, 1, 0.5, 0.0)
    oks = [r for r in records if r[2] == 200]
    assert len(records) - len(oks) == 3 and len(oks) > 1000   # back to back once it answers


def test_grpc_refused_connections_back_off(closed_port, monkeypatch):
    """The channel's own UNAVAILABLE ('failed to connect') is no answer too; grpc fails such
    calls fast while it waits to reconnect, so without the backoff this spun as well."""
    pytest.importorskip("tritonclient.grpc")
    import numpy as np

    from benchmarks import grpc_load

    monkeypatch.setattr(grpc_load, "summarize", lambda records, window, clients: records)
    request = grpc_load.grpc_infer_request("lfm2", np.ones((1, 4), dtype=np.int64))
    records, cpu, _ = measure(lambda: grpc_load.run_grpc_load(
        f"127.0.0.1:{closed_port}", request, CLIENTS, WINDOW_S, 0.0))
    assert records and {r[2] for r in records} == {http_load.NO_ANSWER}
    assert len(records) <= CLIENTS * tries_bound(), len(records)
    assert cpu < 0.3 * WINDOW_S, f"clients used {cpu:.2f} s of CPU in a {WINDOW_S} s window"
