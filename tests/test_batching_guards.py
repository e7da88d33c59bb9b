"""Guards a mutation run found untested in service/batching.py."""
import threading
import time

from service.batching import Batcher


class Slow:
    """run_batch whose first batch takes `first_s`; records (key, payloads, start time)."""

    def __init__(self, first_s):
        self.first_s, self.batches = first_s, []

    def __call__(self, key, items):
        self.batches.append((key, [i.payload for i in items], time.perf_counter()))
        if len(self.batches) == 1:
            time.sleep(self.first_s)
        return [i.payload for i in items]


def test_queue_delay_is_counted_from_arrival_not_from_when_the_worker_looks():
    """An item that already waited max_delay behind a busy worker runs as soon as the worker
    is free; it does not wait another max_delay for company (B01: deadline from now)."""
    run = Slow(first_s=0.8)
    b = Batcher("m", run, max_batch_size=4, max_delay_s=1.2, max_queue_size=10).start()
    try:
        t0 = time.perf_counter()
        busy = b.submit(0, key="k")                       # idle model: runs at once, for 0.8 s
        time.sleep(0.05)
        late = b.submit(1, key="a")                        # arrives while the worker is busy
        other = b.submit(2, key="b")                       # another key queued: not idle
        assert busy.result(5) == 0 and late.result(5) == 1 and other.result(5) == 2
        started = {payloads[0]: t for _, payloads, t in run.batches}
        # arrived at ~0.05 s, deadline ~1.25 s, worker free at ~0.8 s: runs by ~1.25 s, not at ~2.0 s
        assert started[1] - t0 < 1.6, started[1] - t0
    finally:
        b.stop()


def test_a_none_key_item_under_load_runs_without_waiting_for_company():
    """Items with key None always run alone, so nothing can join them: they never wait for
    the batching delay, even when the queue has other items (B03)."""
    run = Slow(first_s=0.2)
    b = Batcher("m", run, max_batch_size=4, max_delay_s=2.0, max_queue_size=10).start()
    try:
        t0 = time.perf_counter()
        busy = b.submit(0, key="k")                        # runs at once (idle), 0.2 s
        time.sleep(0.05)
        alone = b.submit(1, key=None)
        other = b.submit(2, key="b")                       # load: the queue is not just `alone`
        assert busy.result(5) == 0 and alone.result(5) == 1 and other.result(5) == 2
        started = {payloads[0]: t for _, payloads, t in run.batches}
        assert started[1] - t0 < 1.0, started[1] - t0      # not the 2 s delay
    finally:
        b.stop()


def test_stop_does_not_wait_out_the_batching_delay():
    """stop(drain=True) runs what is queued at once: a batch waiting to fill is not held for
    max_delay while the server shuts down (B15)."""
    run = Slow(first_s=0.2)
    b = Batcher("m", run, max_batch_size=8, max_delay_s=3.0, max_queue_size=10).start()
    busy = b.submit(0, key="k")                            # runs at once (idle), 0.2 s
    time.sleep(0.05)
    waiting = [b.submit(1, key="k"), b.submit(2, key="j")]  # not idle: item 1 waits up to 3 s
    time.sleep(0.4)
    t0 = time.perf_counter()
    b.stop(drain=True, timeout=10)
    assert busy.result(0) == 0 and [f.result(0) for f in waiting] == [1, 2]
    assert time.perf_counter() - t0 < 1.5


def test_cancelled_batch_mates_do_not_count_as_concurrency():
    """The idle rule reads how many items the previous forward *ran*: one live item and a
    cancelled batch-mate is a lone client, whose next request must not wait max_delay (B11)."""
    gate = threading.Event()

    def run(key, items):
        gate.wait(5)
        return [i.payload for i in items]
    b = Batcher("m", run, max_batch_size=8, max_delay_s=1.5, max_queue_size=10).start()
    try:
        busy = b.submit(0, key="k")                  # idle: runs at once, held at the gate
        time.sleep(0.05)
        live, gone = b.submit(1, key="k"), b.submit(2, key="k")
        assert gone.cancel()
        gate.set()
        assert busy.result(5) == 0 and live.result(5) == 1   # its batch: [1, 2], one ran
        time.sleep(0.05)
        t0 = time.perf_counter()
        assert b.submit(3, key="k").result(5) == 3
        assert time.perf_counter() - t0 < 0.75, time.perf_counter() - t0   # not the 1.5 s delay
    finally:
        b.stop()
