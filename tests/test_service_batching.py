"""service.batching.Batcher: grouping, limits, delays, failures and draining."""
import threading
import time

import pytest

from service.batching import Batcher, BatcherStopped, QueueFull


class Recorder:
    """run_batch that records (key, payloads) and returns payload * 10; can block or fail."""

    def __init__(self, delay=0.0, fail_on=None):
        self.batches, self.delay, self.fail_on = [], delay, fail_on
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, key, items):
        self.gate.wait(10)
        payloads = [i.payload for i in items]
        self.batches.append((key, payloads))
        if self.fail_on is not None and self.fail_on in payloads:
            raise RuntimeError("boom")
        time.sleep(self.delay)
        return [p * 10 for p in payloads]


def make(run, **kw):
    opts = dict(max_batch_size=4, max_delay_s=0.05, max_queue_size=100)
    opts.update(kw)
    return Batcher("m", run, **opts).start()


def test_compatible_items_share_a_forward_up_to_max_batch_size():
    rec = Recorder()
    rec.gate.clear()  # hold the worker so everything queues up first
    b = make(rec)
    futures = [b.submit(i, key="k") for i in range(10)]
    rec.gate.set()
    assert [f.result(5) for f in futures] == [i * 10 for i in range(10)]
    sizes = [len(p) for _, p in rec.batches]
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) <= 4  # first may run alone
    b.stop()


def test_incompatible_keys_never_mix_and_keep_fifo_order():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_delay_s=0.0)
    futures = [b.submit(i, key="a" if i % 2 else "b") for i in range(8)]
    rec.gate.set()
    for f in futures:
        f.result(5)
    for key, payloads in rec.batches:
        assert all(("a" if p % 2 else "b") == key for p in payloads)
        assert payloads == sorted(payloads)
    b.stop()


def test_none_key_runs_alone():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec)
    futures = [b.submit(i, key=None) for i in range(3)]
    rec.gate.set()
    for f in futures:
        f.result(5)
    assert all(len(p) == 1 for _, p in rec.batches)
    b.stop()


def test_lone_request_on_idle_model_does_not_wait():
    rec = Recorder()
    b = make(rec, max_delay_s=1.0)
    for i in range(3):
        t0 = time.perf_counter()
        assert b.submit(i, key="k").result(5) == i * 10
        assert time.perf_counter() - t0 < 0.5  # not the 1 s batching delay
    b.stop()


def test_after_a_multi_item_batch_a_lone_request_waits_at_most_max_delay():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_delay_s=0.3, max_batch_size=2)
    futures = [b.submit(i, key="k") for i in range(2)]
    rec.gate.set()
    [f.result(5) for f in futures]  # the model saw concurrency
    t0 = time.perf_counter()
    assert b.submit(9, key="k").result(5) == 90
    assert 0.2 <= time.perf_counter() - t0 < 2.0
    b.stop()


def test_oversized_item_runs_alone():
    rec = Recorder()
    b = make(rec, max_delay_s=0.0)
    assert b.submit(7, key="k", rows=9).result(5) == 70
    b.stop()


def test_queue_full_raises_and_every_accepted_item_is_answered():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_queue_size=3, max_batch_size=1)
    accepted, rejected = [], 0
    for i in range(10):
        try:
            accepted.append(b.submit(i, key="k"))
        except QueueFull:
            rejected += 1
    assert rejected >= 6 and len(accepted) <= 4
    rec.gate.set()
    assert all(f.result(5) is not None for f in accepted)
    b.stop()


def test_batch_failure_reaches_every_member_and_worker_survives():
    rec = Recorder(fail_on=2)
    rec.gate.clear()
    b = make(rec)
    futures = [b.submit(i, key="k") for i in range(4)]
    rec.gate.set()
    errors = [f.exception(5) for f in futures]
    assert any(isinstance(e, RuntimeError) for e in errors)
    assert b.submit(5, key="k").result(5) == 50  # still serving
    b.stop()


def test_cancelled_items_are_skipped():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_batch_size=1, max_delay_s=0.0)
    first = b.submit(0, key="k")
    time.sleep(0.05)  # worker holds item 0 at the gate
    second = b.submit(1, key="k")
    assert second.cancel()
    rec.gate.set()
    assert first.result(5) == 0
    b.stop()
    assert [p for _, p in rec.batches] == [[0]]


def test_cancelled_items_give_back_their_queue_slots():
    """A caller that gave up (timeout, disconnect) before its item ran holds no queue slot:
    with the queue full of cancelled items a new request is taken, not a 503."""
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_batch_size=1, max_delay_s=0.0, max_queue_size=2)
    running = b.submit(0, key="k")
    time.sleep(0.05)  # worker holds item 0 at the gate; the queue is empty
    gone = [b.submit(i, key="k") for i in (1, 2)]
    with pytest.raises(QueueFull):
        b.submit(3, key="k")   # full of live items: refused
    assert all(f.cancel() for f in gone)
    taken = [b.submit(i, key="k") for i in (4, 5)]   # both slots back
    rec.gate.set()
    assert running.result(5) == 0 and [f.result(5) for f in taken] == [40, 50]
    b.stop()
    assert [p for _, p in rec.batches] == [[0], [4], [5]]


def test_a_swept_head_item_does_not_stop_the_worker():
    """The worker waits on the queue's first item for its batch to fill; when that item is
    cancelled and swept out by a submit meanwhile, the worker starts over with the new head."""
    rec = Recorder()
    b = make(rec, max_batch_size=4, max_delay_s=0.3, max_queue_size=2)
    head = b.submit(0, key="a")
    other = b.submit(1, key="b")   # another key: not idle, so the worker waits on head's batch
    time.sleep(0.05)
    assert head.cancel()
    late = b.submit(2, key="b")    # queue full: head is swept, 2 joins 1's batch
    assert other.result(5) == 10 and late.result(5) == 20
    b.stop()
    assert rec.batches == [("b", [1, 2])]


def test_stop_drains_accepted_work_then_refuses_new():
    rec = Recorder(delay=0.02)
    rec.gate.clear()
    b = make(rec, max_batch_size=2)
    futures = [b.submit(i, key="k") for i in range(6)]
    threading.Timer(0.05, rec.gate.set).start()
    b.stop(drain=True, timeout=10)
    assert [f.result(0) for f in futures] == [i * 10 for i in range(6)]
    with pytest.raises(BatcherStopped):
        b.submit(1, key="k")


@pytest.mark.parametrize("kw", [pytest.param({"max_batch_size": 0}, id="batch0"),
                                pytest.param({"max_queue_size": 0}, id="queue0"),
                                pytest.param({"max_delay_s": -1}, id="negative-delay")])
def test_bad_limits_raise(kw):
    opts = dict(max_batch_size=1, max_delay_s=0.0, max_queue_size=1)
    opts.update(kw)
    with pytest.raises(ValueError):
        Batcher("m", Recorder(), **opts)


def _two_items_in_one_batch(run, **kw):
    """Two items of one key submitted while the worker waits (max_delay): one batch of both."""
    b = make(run, max_delay_s=0.2, **kw)
    futures = [b.submit(1, "k"), b.submit(2, "k")]
    return b, futures


def test_a_per_item_exception_fails_that_item_only():
    """run_batch may answer one item of a batch with its own error (a bad request among good ones)."""
    b, (ok, bad) = _two_items_in_one_batch(lambda key, items: [10, ValueError("item 2: bad input")])
    assert ok.result(5) == 10
    with pytest.raises(ValueError, match="item 2: bad input"):
        bad.result(5)
    b.stop()


def test_too_few_results_fail_every_item_instead_of_leaving_one_waiting():
    b, futures = _two_items_in_one_batch(lambda key, items: [10])
    for f in futures:
        with pytest.raises(RuntimeError, match="1 results for 2 items"):
            f.result(5)
    b.stop()


def test_an_executor_that_fails_answers_the_batch_and_the_worker_goes_on():
    """The executor running batches off the worker thread raising (shut down) reaches the items;
    a later batch is still run."""
    calls = []

    def execute(job):
        calls.append(job)
        if len(calls) == 1:
            raise RuntimeError("executor shut down")
        job()
    b, futures = _two_items_in_one_batch(Recorder(), execute=execute)
    for f in futures:
        with pytest.raises(RuntimeError, match="executor shut down"):
            f.result(5)
    assert b.submit(3, "k").result(5) == 30
    b.stop()
