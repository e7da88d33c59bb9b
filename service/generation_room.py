"""Admission arithmetic of the GenerationScheduler (service/generation.py): how many
sequences would wait beyond the decode rows free for them, the reservation that admits
a request's n sequences all or none, and which parked requests may take an engine."""
from __future__ import annotations

import collections
import contextvars
from dataclasses import dataclass
from typing import Any, Mapping, Optional

OTHER_ENGINES = 1   # live engines besides the default policy's (each holds a full cache)


@dataclass(eq=False)
class Reservation:
    """Room taken for `left` more sequences of one request (GenerationScheduler.reserved)."""
    scheduler: Any
    impl: str
    left: int


# The reservation of the request being submitted. GenerateHandler.events submits each choice
# from inside its own generator (one task per choice), so it travels as a contextvar, which
# asyncio copies into every task started under it, rather than as an argument.
RESERVATION: contextvars.ContextVar[Optional[Reservation]] = contextvars.ContextVar(
    "dwserve_generation_reservation", default=None)


def free_rows(engine) -> int:
    """Rows no sequence holds (a joining group's are held: its prefill is under way). Read
    from the event loop while step() runs on the scheduler thread, which moves a group from
    `joining` to `rows` in two statements: between them the group is in both, so sequences
    are counted once each (by identity), not list lengths added (a spurious 503 at the bound)."""
    held = {id(s) for s in list(engine.rows)} | {id(s) for s in list(getattr(engine, "joining", ()))}
    return max(0, engine.capacity - len(held))


def would_queue(pending: collections.Counter, engines: Mapping[str, Any], default: str, capacity: int,
                others_blocked: bool = False) -> int:
    """Sequences that would wait for a row: per policy, its pending ones (without a row yet)
    beyond its engine's free rows. A policy without an engine gets all `capacity` rows if its
    engine can be made now (the default's always can; others while fewer than OTHER_ENGINES
    are live), else none: it is parked until an engine is dropped. others_blocked: a parked
    request of a non-default policy waits for an engine, and the scheduler lets no other
    non-default newcomer pass it (GenerationScheduler._unpark), so those get no rows either."""
    slots = OTHER_ENGINES - sum(1 for impl in engines if impl != default)
    queued = 0
    for impl, count in pending.items():
        if others_blocked and impl != default:
            free = 0
        elif impl in engines:
            free = free_rows(engines[impl])
        elif impl == default or slots > 0:
            free, slots = capacity, slots - (impl != default)
        else:
            free = 0
        queued += max(0, count - free)
    return queued


def unpark(parked, engines: Mapping[str, Any], default: str) -> tuple[list, collections.deque, list]:
    """Parked tickets (in arrival order) -> (go, stay, cancelled). The default policy's go
    always; another's while its engine is live or one may be made (fewer than OTHER_ENGINES
    live), and only until one of them must wait: then every later non-default one stays too,
    so a busy policy's newcomers queue behind a waiting policy's request instead of keeping
    their engine busy (and the other out) for ever. `engines` holds only busy non-default
    engines (idle ones were dropped)."""
    others = {impl for impl in engines if impl != default}
    go, stay, cancelled, blocked = [], collections.deque(), [], False
    for ticket in parked:
        if ticket.seq.cancelled:
            cancelled.append(ticket)
        elif ticket.impl == default:
            go.append(ticket)
        elif not blocked and (ticket.impl in others or len(others) < OTHER_ENGINES):
            others.add(ticket.impl)
            go.append(ticket)
        else:
            blocked = True
            stay.append(ticket)
    return go, stay, cancelled
