"""Continuous batching of /v1/generate: every live generation advances one token per step.

One scheduler per language model, on its own thread. Requests arrive as Sequences
(models.lfm2.continuous) with a callback; between decode steps the scheduler hands new ones
to the engine of their depthwise policy (`lm.continuous_batch(capacity, max_length)`, made
on first use and kept while the policy has work; the server's default policy's engine is
made at warm-up and kept). A step admits what fits (one prefill for all that fit) and
decodes one token for every live sequence; a finished one leaves at once and frees its row.
Engines of different policies take turns, a step each.

Each engine holds a full cache (capacity x max_length), so besides the default policy's at
most OTHER_ENGINES more are live: a request of yet another policy waits ("parked", first
come first served) until one of them is idle and dropped. The cached rows thus stay within
(1 + OTHER_ENGINES) x --max-decode-batch, whatever `depthwise_impl` clients send.

Every model step runs on the compute thread (ModelRuntime.on_compute), one step at a time,
so /v2 infer batches of any model run between generation steps, and no two threads ever
touch the model. Events go back to each request through its callback:
  ("token", id) per generated token, then ("done", finish_reason) or ("error", exception).

Launches per generated token (dwserve_kernel_launches_per_token): service/generation_launches.py.

Invariants: every submitted sequence gets exactly one "done" or "error"; at most
`max_queue_size` sequences wait beyond the rows free for them (then QueueFull -> 503): on
an idle server a request of up to capacity + max_queue_size sequences is accepted, one of
more never (ValueError -> 400). `reserved(n, impl)` accepts a request's n sequences all or
none. `stop()` drains: what was accepted finishes, nothing new is accepted (BatcherStopped -> 503).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from .batching import BatcherStopped, QueueFull
from .generation_launches import TokenLaunchCounter
from .generation_room import RESERVATION, Reservation, unpark, would_queue

log = logging.getLogger("dwserve.generation")

Emit = Callable[[tuple], None]


@dataclass(eq=False)
class Ticket:
    seq: Any            # models.lfm2.continuous.Sequence
    impl: str
    emit: Emit
    enqueued: float = field(default_factory=time.perf_counter)
    started: Optional[float] = None     # when its first decode step began (perf_counter)


class GenerationScheduler:
    def __init__(self, runtime, capacity: int, max_length: int, prefill_chunk: Optional[int] = None):
        self.rt = runtime
        self.lm = runtime.served.lm
        self.capacity, self.max_length, self.prefill_chunk = capacity, max_length, prefill_chunk
        self._cond = threading.Condition()
        self._incoming: collections.deque[Ticket] = collections.deque()
        self._parked: collections.deque[Ticket] = collections.deque()   # waiting for an engine
        # Unparked, not yet in their engine (which may be being made: a full cache allocated),
        # still counted by admission until engine.add has them in its queue.
        self._entering: list[Ticket] = []
        self._reserved: list[Reservation] = []
        # impl -> engine (ContinuousBatch). Replaced, never changed in place: the event loop
        # reads it (admission) while the scheduler thread makes and drops engines.
        self._engines: dict[str, Any] = {}
        self._tickets: dict[str, dict[Any, Ticket]] = {}  # impl -> {sequence: ticket}
        self._prefixes = None   # the engines' shared PrefixCache (_prefix_cache), made on first use
        self._stopping = False
        self._launches = TokenLaunchCounter(runtime)   # kernel_launches_per_token (_run_step)
        self._thread = threading.Thread(target=self._loop, name=f"dwserve-generate-{runtime.name}",
                                        daemon=True)

    # --- request side (event loop) ----------------------------------------------------------
    def submit(self, seq, impl: str, emit: Emit) -> Ticket:
        """Queue a sequence; raises QueueFull when max_queue_size would wait beyond the free
        rows, BatcherStopped when the server is draining. Inside `reserved(n, impl)` it takes
        one of the n places reserved (no check: the request was admitted as a whole)."""
        with self._cond:
            if self._stopping:
                raise BatcherStopped(f"model {self.rt.name!r} is shutting down")
            held = RESERVATION.get()
            if held is not None and held.scheduler is self and held.impl == impl and held.left > 0:
                held.left -= 1
            else:
                self._check_room(impl, 1)
            ticket = Ticket(seq, impl, emit)
            self._incoming.append(ticket)
            self._cond.notify()
        return ticket

    @contextlib.contextmanager
    def reserved(self, n: int, impl: str, asked_for: str = "n") -> Iterator[Reservation]:
        """Admit a request's n sequences all or none: QueueFull (nothing taken) unless all fit
        now, ValueError naming `asked_for` (the request's fields that made them) when n can
        never fit. The submits made inside (also in tasks started inside) use the places;
        what is left unused is released on exit."""
        limit = self.rt.settings.max_queue_size
        if n > self.capacity + limit:
            raise ValueError(f"{asked_for}: {n} sequences can never be admitted together: the server decodes "
                             f"{self.capacity} at once (--max-decode-batch) and queues {limit} more "
                             f"(--max-queue-size); ask for {asked_for} <= {self.capacity + limit} or raise those limits")
        with self._cond:
            if self._stopping:
                raise BatcherStopped(f"model {self.rt.name!r} is shutting down")
            self._check_room(impl, n)
            held = Reservation(self, impl, n)
            self._reserved.append(held)
        token = RESERVATION.set(held)
        try:
            yield held
        finally:
            RESERVATION.reset(token)
            with self._cond:
                self._reserved.remove(held)

    def cancel(self, ticket: Ticket) -> None:
        """The client left, hit a stop string or timed out: the sequence ends before the next
        step (its row is freed) and still gets its ("done", "cancelled")."""
        ticket.seq.cancelled = True
        with self._cond:
            self._cond.notify()

    @property
    def waiting(self) -> int:
        """Sequences accepted (or reserved) but without a row yet."""
        with self._cond:
            return sum(self._pending().values())

    def _pending(self) -> collections.Counter:
        """impl -> sequences without a row: submitted, parked, in an engine's queue, reserved.
        Under self._cond (which guards _incoming, _parked, _entering and _reserved). A ticket
        being entered is briefly counted twice (in _entering and its engine's queue): never
        less than what waits."""
        pending = collections.Counter(t.impl for t in (*self._incoming, *self._parked, *self._entering))
        for impl, engine in self._engines.items():
            pending[impl] += len(engine.waiting)
        for held in self._reserved:
            pending[held.impl] += held.left
        return pending

    def _check_room(self, impl: str, n: int) -> None:
        """QueueFull unless, with n more sequences of `impl`, at most max_queue_size wait
        beyond the rows free for them. Counting only what would really queue is what lets an
        idle server take a burst (or an n-choice request) as large as its free rows."""
        pending = self._pending()
        pending[impl] += n
        default = self.rt.settings.depthwise_impl
        blocked = any(t.impl != default for t in self._parked)   # outside the loop's lock: only waiting ones
        queued = would_queue(pending, self._engines, default, self.capacity, blocked)
        limit = self.rt.settings.max_queue_size
        if queued > limit:
            raise QueueFull(f"model {self.rt.name!r}: {queued} generations would wait for a row "
                            f"(max_queue_size={limit}); retry later")

    # --- lifecycle ----------------------------------------------------------------------------
    def warmup(self) -> None:
        """Make the default policy's engine (on CUDA: capture its graphs) and run a sequence
        that fits max_length through it before the server turns ready. Call before start()."""
        from models.lfm2.continuous import Sequence

        if self.max_length >= 2:   # else nothing fits: every generation is a 400
            impl, prompt = self.rt.settings.depthwise_impl, [1, 2, 3][:max(1, self.max_length - 2)]
            engine = self._engine(impl)
            engine.add(Sequence(prompt, max_new_tokens=min(2, self.max_length - len(prompt))))   # a decode step if room
            while engine.busy:
                self._run_step(impl, engine)

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
                # Parked tickets wait for a busy engine to end (or, after a failed step, for
                # none to be busy: then they get one at once), so they need no wake-up of their own.
                while not self._incoming and not self._parked and not self._busy() and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._incoming and not self._parked and not self._busy():
                    return
                self._parked.extend(self._incoming)
                self._incoming.clear()
                new = self._unpark()
                self._entering = list(new)
            try:
                for ticket in new:
                    self._enter(ticket)
                    with self._cond:
                        self._entering.remove(ticket)
                for impl in [i for i, e in self._engines.items() if e.busy]:
                    self._step(impl)
                default = self.rt.settings.depthwise_impl   # others' caches go when idle
                self._engines = {i: e for i, e in self._engines.items() if e.busy or i == default}
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave requests hanging
                log.exception("generation scheduler: failing the generations in flight")
                for ticket in [t for tickets in self._tickets.values() for t in tickets.values()]:
                    ticket.emit(("error", exc))
                self._tickets.clear()
                self._engines = {}
                with self._cond:
                    for ticket in self._entering:   # their engine is gone with the others
                        ticket.emit(("error", exc))
                    self._entering = []

    def _unpark(self) -> list:
        """The parked tickets that may enter an engine now, in order (under self._cond); a
        cancelled one leaves without an engine (generation_room.unpark says who goes)."""
        go, self._parked, cancelled = unpark(self._parked, self._engines, self.rt.settings.depthwise_impl)
        for ticket in cancelled:
            ticket.emit(("done", "cancelled"))
        return go

    def _on_compute(self, impl: str, fn: Callable[[], Any]) -> Any:
        with self.rt.hooks.use_impl(impl):       # a contextvar: on_compute carries it over
            return self.rt.on_compute(fn)

    def _engine(self, impl: str):
        engine = self._engines.get(impl)
        if engine is None:
            engine = self._on_compute(impl, lambda: self.lm.continuous_batch(
                self.capacity, self.max_length, prefill_chunk=self.prefill_chunk,
                prefix_cache=self._prefix_cache(impl)))
            self._engines = {**self._engines, impl: engine}
            mib = getattr(engine, "cache_bytes", 0) / 2**20
            log.info("generation engine for impl %s: %d rows x %d tokens, cache %.0f MiB "
                     "(--max-decode-batch x --max-sequence-length)", impl, self.capacity, self.max_length, mib)
            self._tickets.setdefault(impl, {})
        return engine

    def _prefix_cache(self, impl: str):
        """This policy's part of the one prefix cache all engines share (--prefix-cache-mib
        bounds them together); a dropped engine's prefixes stay, LRU, for its next one."""
        mib = self.rt.settings.prefix_cache_mib
        if not mib:
            return None
        if self._prefixes is None:
            from models.lfm2.prefix_cache import PrefixCache
            self._prefixes = PrefixCache(mib << 20)
        return self._prefixes.namespace(impl)

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
            out = self._run_step(impl, engine)
        except Exception as exc:  # noqa: BLE001 - fail this engine's requests, keep serving
            if not isinstance(exc, BatcherStopped):   # that is the compute thread gone at shutdown: a 503, no bug
                log.exception("generation step failed under impl %s", impl)
            for ticket in tickets.values():
                ticket.emit(("error", exc))
            tickets.clear()
            self._engines = {i: e for i, e in self._engines.items() if i != impl}
            return
        m = self.rt.metrics
        if out:
            self.rt.statistics.step_done()
            m.decode_batch_size.labels(self.rt.name).observe(len(out))
            # Counted here, as made: every token costs a step whether or not its client reads
            # it (one still queued for a client that left, one past a stop string, an eos), and
            # the rate stays smooth through long generations instead of jumping at their ends.
            m.generated_tokens.labels(self.rt.name, impl).inc(len(out))
        for seq, token in out:
            ticket = tickets[seq]
            if ticket.started is None:
                ticket.started = t0
                m.queue_duration.labels(self.rt.name).observe(t0 - ticket.enqueued)
            ticket.emit(("token", token))
        for seq in [s for s in tickets if s.done]:
            tickets.pop(seq).emit(("done", seq.finish_reason))

    def _run_step(self, impl: str, engine) -> list:
        """engine.step() on the compute thread, now and then under a launch count
        (service/generation_launches.py)."""
        return self._launches.step(impl, engine, lambda fn: self._on_compute(impl, fn))
