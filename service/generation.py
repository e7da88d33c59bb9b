"""Continuous batching of /v1/generate: every live generation advances one token per step.

One scheduler per language model, on its own thread. Requests arrive as Sequences
(models.lfm2.continuous) with a callback; between decode steps the scheduler hands new ones
to the engine of their depthwise policy (`lm.continuous_batch(capacity, max_length)`, made
on first use and kept while the policy has work; the server's default policy's engine is
made at warm-up and kept). A step admits what fits (one prefill for all that fit) and
decodes one token for every live sequence; a finished one leaves at once and frees its row.
Engines of different policies take turns, a step each.

Every model step runs on the compute thread (ModelRuntime.on_compute), one step at a time,
so /v2 infer batches of any model run between generation steps, and no two threads ever
touch the model. Events go back to each request through its callback:
  ("token", id) per generated token, then ("done", finish_reason) or ("error", exception).

Invariants: every submitted sequence gets exactly one "done" or "error"; at most
`max_queue_size` sequences wait for a row (then QueueFull -> 503); `stop()` drains: what
was accepted finishes, nothing new is accepted (BatcherStopped -> 503).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .batching import BatcherStopped, QueueFull

log = logging.getLogger("dwserve.generation")

Emit = Callable[[tuple], None]


@dataclass(eq=False)
class Ticket:
    seq: Any            # models.lfm2.continuous.Sequence
    impl: str
    emit: Emit
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False


class GenerationScheduler:
    def __init__(self, runtime, capacity: int, max_length: int, prefill_chunk: Optional[int] = None):
        self.rt = runtime
        self.lm = runtime.served.lm
        self.capacity, self.max_length, self.prefill_chunk = capacity, max_length, prefill_chunk
        self._cond = threading.Condition()
        self._incoming: collections.deque[Ticket] = collections.deque()
        self._engines: dict[str, Any] = {}               # impl -> engine (ContinuousBatch)
        self._tickets: dict[str, dict[Any, Ticket]] = {}  # impl -> {sequence: ticket}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"dwserve-generate-{runtime.name}",
                                        daemon=True)

    # --- request side (event loop) ----------------------------------------------------------
    def submit(self, seq, impl: str, emit: Emit) -> Ticket:
        """Queue a sequence; raises QueueFull when max_queue_size wait already, BatcherStopped
        when the server is draining."""
        with self._cond:
            if self._stopping:
                raise BatcherStopped(f"model {self.rt.name!r} is shutting down")
            if self.waiting >= self.rt.settings.max_queue_size:
                raise QueueFull(f"model {self.rt.name!r}: {self.waiting} generations wait for a row "
                                f"(max_queue_size={self.rt.settings.max_queue_size}); retry later")
            ticket = Ticket(seq, impl, emit)
            self._incoming.append(ticket)
            self._cond.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The client left, hit a stop string or timed out: the sequence ends before the next
        step (its row is freed) and still gets its ("done", "cancelled")."""
        ticket.seq.cancelled = True
        with self._cond:
            self._cond.notify()

    @property
    def waiting(self) -> int:
        """Sequences accepted but without a row yet."""
        return len(self._incoming) + sum(len(e.waiting) for e in list(self._engines.values()))

    # --- lifecycle ----------------------------------------------------------------------------
    def warmup(self) -> None:
        """Make the default policy's engine (on CUDA: capture its graphs) and run one short
        sequence through it, before the server turns ready. Call before start()."""
        from models.lfm2.continuous import Sequence

        impl = self.rt.settings.depthwise_impl
        engine = self._engine(impl)
        engine.add(Sequence([1, 2, 3], max_new_tokens=2))
        while engine.busy:
            self._on_compute(impl, engine.step)

    def start(self) -> "GenerationScheduler":
        self._thread.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish every accepted generation (up to timeout), accept no new ones."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the loop (scheduler thread) ----------------------------------------------------------
    def _busy(self) -> bool:
        return any(e.busy for e in self._engines.values())

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._incoming and not self._busy() and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._incoming and not self._busy():
                    return
                new = list(self._incoming)
                self._incoming.clear()
            try:
                for ticket in new:
                    self._enter(ticket)
                for impl in [i for i, e in self._engines.items() if e.busy]:
                    self._step(impl)
                for impl in [i for i, e in self._engines.items() if not e.busy]:
                    if impl != self.rt.settings.depthwise_impl:   # others' caches go when idle
                        del self._engines[impl]
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave requests hanging
                log.exception("generation scheduler: failing the generations in flight")
                for ticket in [t for tickets in self._tickets.values() for t in tickets.values()]:
                    ticket.emit(("error", exc))
                self._tickets.clear()
                self._engines.clear()

    def _on_compute(self, impl: str, fn: Callable[[], Any]) -> Any:
        with self.rt.hooks.use_impl(impl):       # a contextvar: on_compute carries it over
            return self.rt.on_compute(fn)

    def _engine(self, impl: str):
        engine = self._engines.get(impl)
        if engine is None:
            engine = self._on_compute(impl, lambda: self.lm.continuous_batch(
                self.capacity, self.max_length, prefill_chunk=self.prefill_chunk,
                prefix_cache=self._prefix_cache()))
            self._engines[impl] = engine
            mib = getattr(engine, "cache_bytes", 0) / 2**20
            log.info("generation engine for impl %s: %d rows x %d tokens, cache %.0f MiB "
                     "(--max-decode-batch x --max-sequence-length)", impl, self.capacity, self.max_length, mib)
            self._tickets.setdefault(impl, {})
        return engine

    def _prefix_cache(self):
        mib = self.rt.settings.prefix_cache_mib
        if not mib:
            return None
        from models.lfm2.prefix_cache import PrefixCache
        return PrefixCache(mib << 20)

    def _enter(self, ticket: Ticket) -> None:
        try:
            self._engine(ticket.impl).add(ticket.seq)
        except Exception as exc:  # noqa: BLE001 - this request fails, the loop goes on
            ticket.emit(("error", exc))
            return
        if ticket.seq.done:                       # nothing to generate (max_new_tokens 0)
            ticket.emit(("done", ticket.seq.finish_reason))
            return
        self._tickets[ticket.impl][ticket.seq] = ticket

    def _step(self, impl: str) -> None:
        engine, tickets = self._engines[impl], self._tickets[impl]
        t0 = time.perf_counter()
        try:
            out = self._on_compute(impl, engine.step)
        except Exception as exc:  # noqa: BLE001 - fail this engine's requests, keep serving
            log.exception("generation step failed under impl %s", impl)
            for ticket in tickets.values():
                ticket.emit(("error", exc))
            tickets.clear()
            del self._engines[impl]
            return
        m = self.rt.metrics
        if out:
            m.decode_batch_size.labels(self.rt.name).observe(len(out))
        for seq, token in out:
            ticket = tickets[seq]
            if not ticket.started:
                ticket.started = True
                m.queue_duration.labels(self.rt.name).observe(t0 - ticket.enqueued)
            ticket.emit(("token", token))
        for seq in [s for s in tickets if s.done]:
            tickets.pop(seq).emit(("done", seq.finish_reason))
