"""Dynamic batching: one worker thread per model, requests grouped by a compatibility key.

Invariants
- Every submitted item's future is resolved exactly once (result, exception or cancel),
  including on shutdown: `stop(drain=True)` runs everything already accepted.
- Items with equal non-None keys (same impl, same per-row shapes/dtypes) may share one
  forward; a batch holds at most `max_batch_size` rows, except a single item larger than
  that, which runs alone. Items with key None always run alone.
- The first item of a batch waits at most `max_delay_s` for company, and only when there
  is load: if the previous forward ran a single item and nothing else is queued, it runs
  at once (a lone client pays no batching delay; under concurrency batches form while the
  worker is busy and then wait to fill). Order is FIFO among compatible items, and
  incompatible items keep their place for the next round.
- At most `max_queue_size` items wait; `submit` beyond that raises `QueueFull` (-> 503).
- The worker thread is the only thread that touches the model, so inference never blocks
  the event loop and a model never runs two forwards concurrently. With `execute` given
  (service.compute: one thread for all models' forwards) the worker hands each formed batch
  to it and waits; that thread runs the batch *and resolves its futures*, so a reply goes
  straight from the forward to the event loop without waking the worker first.
"""
from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

log = logging.getLogger("dwserve.batching")


class QueueFull(Exception):
    """The model's queue is at max_queue_size; the client should retry later (503)."""


class BatcherStopped(Exception):
    """The server is shutting down and accepts no new work (503)."""


@dataclass(eq=False)  # identity: deque.remove must never compare payloads (numpy arrays)
class Item:
    payload: Any
    key: Optional[Hashable]
    rows: int
    enqueued: float = field(default_factory=time.perf_counter)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


# run_batch(key, items) -> one result per item, in order; an exception fails the whole batch.
RunBatch = Callable[[Optional[Hashable], list[Item]], list[Any]]
# execute(fn) runs fn() (on some thread) and returns when it has finished.
Execute = Callable[[Callable[[], None]], Any]


class Batcher:
    def __init__(self, name: str, run_batch: RunBatch, *, max_batch_size: int,
                 max_delay_s: float, max_queue_size: int, execute: Optional[Execute] = None):
        if max_batch_size < 1 or max_queue_size < 1 or max_delay_s < 0:
            raise ValueError("Batcher: expected max_batch_size >= 1, max_queue_size >= 1, max_delay_s >= 0")
        self.name = name
        self._run_batch = run_batch
        self._execute = execute
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self._pending: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._last_items = 1  # items in the previous forward: >1 means there is concurrency
        self._thread = threading.Thread(target=self._loop, name=f"dwserve-batcher-{name}", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def submit(self, payload: Any, key: Optional[Hashable], rows: int = 1) -> concurrent.futures.Future:
        item = Item(payload, key, rows)
        with self._cond:
            if self._stopping:
                raise BatcherStopped(f"model {self.name!r} is shutting down")
            if len(self._pending) >= self.max_queue_size:
                # Items whose callers gave up (timeout, disconnect) hold no slot: they would
                # only be dropped when the worker reached them, and a burst of them 503'd
                # live requests meanwhile. Swept only when full: O(1) otherwise.
                self._pending = collections.deque(i for i in self._pending if not i.future.cancelled())
            if len(self._pending) >= self.max_queue_size:
                raise QueueFull(f"model {self.name!r} queue is full ({self.max_queue_size} waiting); retry later")
            self._pending.append(item)
            self._cond.notify()
        return item.future

    def stop(self, drain: bool = True, timeout: Optional[float] = None) -> None:
        """Refuse new work; with drain run what is queued, else cancel it. Joins the worker."""
        with self._cond:
            self._stopping = True
            if not drain:
                while self._pending:
                    self._pending.popleft().future.cancel()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- worker side ------------------------------------------------------------------
    def _take_batch(self, first: Item) -> tuple[list[Item], int]:
        """Compatible items from the front of the queue, FIFO, within max_batch_size rows."""
        if first.key is None:
            return [first], first.rows
        batch, rows = [], 0
        for item in self._pending:
            if item.key == first.key and (not batch or rows + item.rows <= self.max_batch_size):
                batch.append(item)
                rows += item.rows
                if rows >= self.max_batch_size:
                    break
        return batch, rows

    def _next_batch(self) -> Optional[list[Item]]:
        with self._cond:
            while True:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return None  # stopping and drained
                first = self._pending[0]
                deadline = first.enqueued + self.max_delay_s
                while True:
                    batch, rows = self._take_batch(first)
                    remaining = deadline - time.perf_counter()
                    idle = self._last_items <= 1 and len(batch) == len(self._pending)
                    if rows >= self.max_batch_size or first.key is None or remaining <= 0 or self._stopping or idle:
                        break
                    self._cond.wait(remaining)
                for item in batch:
                    self._pending.remove(item)
                # Drop items whose caller gave up (timeout, disconnect) before they ran.
                live = [item for item in batch if item.future.set_running_or_notify_cancel()]
                if live:
                    self._last_items = len(live)
                    return live

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if self._execute is None:
                self._run_and_resolve(batch)
                continue
            try:
                self._execute(functools.partial(self._run_and_resolve, batch))
            except BaseException as exc:  # noqa: BLE001 - the executor itself failed (shut down)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)

    def _run_and_resolve(self, batch: list[Item]) -> None:
        """Run one batch and resolve every item's future exactly once."""
        try:
            results = self._run_batch(batch[0].key, batch)
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - delivered to every waiting request
            for item in batch:
                item.future.set_exception(exc)
            return
        for item, result in zip(batch, results):
            if isinstance(result, BaseException):  # a per-item failure inside a batch
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
