"""Closed-loop throughput estimates (benchmarks/http_load.closed_loop, `dwserve loadtest`'s
run_phase) against clients of known, fixed latencies, where the true rate is sum(1 / latency).

Each client is busy for the whole measured window, so a request that straddles an edge of the
window counts for the fraction of it inside. Counting whole requests and stretching the window
to the last one's end (what both did) reads the slow clients' tails as idle time: with clients
of different speeds the rate came out ~20% low here, and more for a slower server (a long
generation), which inflates every before/after throughput ratio.
"""
import contextlib
import itertools
import threading
import time
import types

import pytest

from benchmarks import http_load
from service import loadtest

LATENCIES = (0.15, 0.25, 0.35, 0.45)      # one per client, seconds: 15.75 requests/s in all


def true_rps(calls: dict[int, list[float]]) -> float:
    """The clients' rate from the durations their calls really took (a loaded box oversleeps)."""
    return sum(len(d) / sum(d) for d in calls.values())


def timed_sleep(calls: dict[int, list[float]], client: int) -> None:
    t0 = time.perf_counter()
    time.sleep(LATENCIES[client])
    calls.setdefault(client, []).append(time.perf_counter() - t0)


def test_closed_loop_throughput_is_the_clients_rate():
    counter, calls = itertools.count(), {}

    @contextlib.contextmanager
    def sender():
        client = next(counter)

        def send():
            timed_sleep(calls, client)
            return 200, "compute;dur=1.0"
        yield send

    records, window = http_load.closed_loop(sender, len(LATENCIES), duration=1.5, warmup=0.2)
    stats = http_load.summarize(records, window, len(LATENCIES))
    assert stats["throughput_rps"] == pytest.approx(true_rps(calls), rel=0.05), stats
    assert window == pytest.approx(1.5)
    # Latency statistics are over the requests started inside the window, as before.
    assert stats["p50_s"] == pytest.approx(0.25, abs=0.06) and stats["errors"] == 0
    assert stats["compute_p50_s"] == pytest.approx(1e-3)


def test_closed_loop_throughput_ignores_failed_requests():
    counter = itertools.count()

    @contextlib.contextmanager
    def sender():
        i = next(counter)

        def send():
            time.sleep(0.1)
            return (200 if i == 0 else 503), ""
        yield send

    records, window = http_load.closed_loop(sender, 2, duration=1.0, warmup=0.05)
    stats = http_load.summarize(records, window, 2)
    assert stats["throughput_rps"] == pytest.approx(10, rel=0.1), stats
    assert stats["errors"] >= 8


def test_dwserve_loadtest_phase_throughput_is_the_workers_rate(monkeypatch):
    """run_phase with httpx swapped for a client whose latency is fixed per worker."""
    counter, lock, calls = itertools.count(), threading.Lock(), {}

    class FakeClient:
        def __init__(self, timeout, **kwargs):
            with lock:
                self.client = next(counter)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def post(self, url, content, headers):
            timed_sleep(calls, self.client)
            return types.SimpleNamespace(status_code=200, is_success=True, headers={"x-depthwise-impl": "auto"})

    monkeypatch.setattr(loadtest.httpx, "Client", FakeClient)
    args = types.SimpleNamespace(model="lfm2", tokens=4, new_tokens=1, concurrency=len(LATENCIES), timeout=5.0)
    target = loadtest.Target("after", "http://127.0.0.1:1")
    phase = loadtest.Phase(target)
    loadtest.run_phase(target, args, 50, 1.5, phase)
    assert phase.rps == pytest.approx(true_rps(calls), rel=0.05), (phase.ok, phase.seconds)
    assert phase.seconds == pytest.approx(1.5, abs=0.05)
    assert phase.ok == len(phase.latencies) >= 12 and phase.server_impl == {"auto"}
