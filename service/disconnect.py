"""Stop a request's work when its HTTP client goes away.

A streamed reply notices a gone client when writing to it fails (Starlette's
StreamingResponse); a JSON reply writes nothing until the work is done, so a generation whose
client closed the socket would run all its max_new_tokens and hold its decode row. The
routes therefore race their work against the ASGI `receive` channel: once the body is read,
the server's next message is `http.disconnect` (GuardMiddleware's replay passes it through),
and then the work is cancelled. Cancelling a task that consumes GenerateHandler.events
raises CancelledError inside the generator, whose `finally` cancels its sequence, so the row
is free before the next decode step.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request

from .errors import ServiceError
from .middleware import CLIENT_CLOSED, client_gone   # CLIENT_CLOSED: what requests_total counts

T = TypeVar("T")


class ClientDisconnected(ServiceError):
    def __init__(self):
        super().__init__(CLIENT_CLOSED, "the client disconnected before the reply was ready; its work was stopped")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, unless the client disconnects first: then `work` is cancelled (and has
    finished cancelling) and ClientDisconnected is raised. Call it after the body is read.

    `work` runs as a task that copies this context (generation.GenerationScheduler.reserved
    rides on a contextvar)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(client_gone(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)   # its finally blocks ran: rows freed
        raise ClientDisconnected()
    finally:   # also when this handler itself is cancelled (server shutdown)
        for t in (task, watcher):
            t.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
