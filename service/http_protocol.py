"""`dwserve serve`'s HTTP protocol: uvicorn's own (httptools, else h11) with two bounds it
lacks, on idle connections and on a request's head (cli.run_server passes it as `http=`), and
the 4xx it answers itself (a head too big or too slow, bytes that are no HTTP request) with
the app's JSON {"error": "..."} body."""
from __future__ import annotations

import json

from .errors import error_body

# A request's head (request line + headers) may be at most this long: uvicorn's httptools
# protocol has no bound of its own (h11's is 16 KiB), and buffered 100 MB of headers per
# connection as readily as 1 KB. 64 KiB is four times nginx's default large header buffers.
MAX_HEAD_BYTES = 64 * 1024


def idle_closing_protocol(head_timeout_s: float):
    """uvicorn's HTTP protocol class (httptools when installed, else h11, as its "auto"), with
    the keep-alive timer also armed when a connection is made. uvicorn arms it only after a
    response, so a socket that never sends a byte stays open for good (a known uvicorn gap,
    Kludex/uvicorn#1192). The first byte received cancels it (uvicorn's data_received), so
    requests, uploads and streamed responses are untouched.

    A request's head is bounded too, in size and time: past MAX_HEAD_BYTES it is a 431, and
    one not complete within head_timeout_s of its first byte (a client trickling headers
    byte by byte, each byte re-cancelling the keep-alive timer: slowloris) is closed. Without
    these each such connection held its socket for good, and with httptools all the header
    bytes it sent. A body's pauses are bounded in the app (service/body.py)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:   # h11 bounds a head itself (16 KiB); its own timer is all it gets here
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
        return type("IdleClosingProtocol", (base,), {"connection_made": _arm_idle_timer(base)})

    class IdleClosingProtocol(base):
        connection_made = _arm_idle_timer(base)
        _in_head, _head_bytes, _head_timer, _heads, _deferred, _head_over = True, 0, None, 0, None, False

        def data_received(self, data: bytes) -> None:
            if self._deferred is not None:
                # A refusal waits for the answers in progress. pause_reading alone does not hold:
                # uvicorn resumes reading whenever a request's app awaits receive (a disconnect
                # watcher), and the cut head's rest was then parsed and served before the refusal.
                return
            in_head, heads = self._in_head, self._heads
            if in_head and self._head_timer is None:   # a head begins: it has head_timeout_s to finish
                self._head_timer = self.loop.call_later(head_timeout_s, self._head_too_slow)
            super().data_received(data)
            if in_head and self._heads == heads and not self.transport.is_closing():   # still that head
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse(431, f"request head over {MAX_HEAD_BYTES} bytes")

        def on_headers_complete(self) -> None:   # httptools' callback
            self._in_head, self._head_bytes, self._heads = False, 0, self._heads + 1
            self._cancel_head_timer()
            # data_received counts only reads that leave a head unfinished; the read that
            # completes it may carry most of it (a 100 KB head sent at once), so the whole head
            # is measured here, from what the parser collected, before any app runs for it.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_HEAD_BYTES:
                self._head_over = True
                raise _HeadTooLarge()   # stops the parser: uvicorn answers via send_400_response
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True                  # a keep-alive connection's next request

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(408, f"request head not complete within {head_timeout_s:g} s (DWSERVE_HEAD_TIMEOUT_S)")

        def _refuse(self, status: int, message: str) -> None:
            if self.cycle is not None and not self.cycle.response_complete:
                # An earlier request on this connection (pipelined) is still being answered:
                # raw bytes now would land inside its response, and closing would lose it.
                # Read nothing more (data_received drops it); refuse once the answers are out.
                self._deferred = (status, message)
                self.flow.pause_reading()
                return
            self.transport.write(error_reply(status, message, self.server_state.default_headers))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to bytes that are no HTTP request, as JSON like every other 4xx
            (DESIGN.md: {"error": "..."}); uvicorn's own is text/plain. A head measured too big
            once complete (on_headers_complete) reaches here too: its answer is the 431."""
            if self._head_over:
                self._head_over = False
                self._refuse(431, f"request head over {MAX_HEAD_BYTES} bytes")
                return
            self.transport.write(error_reply(400, msg, self.server_state.default_headers))
            self.transport.close()

        def on_response_complete(self) -> None:
            # Answered before its body was all read (a 413 from the length, a GET with a body):
            # the body's rest would be read as the next request, and uvicorn re-arms the idle
            # timer only after a request, so one byte of it now and then held the connection for
            # good. Closed instead, as RFC 9112 has a server do that does not read the body.
            # (self.cycle is the last request parsed: a pipelined one still being answered is left be)
            unread = self.cycle is not None and self.cycle.response_complete and getattr(self.cycle, "more_body", False)
            super().on_response_complete()   # may start a pipelined request queued before the bad head
            if unread and not self.transport.is_closing():
                self.transport.close()
                return
            if self._deferred is not None and (self.cycle is None or self.cycle.response_complete) \
                    and not self.transport.is_closing():
                self._refuse(*self._deferred)

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

    return IdleClosingProtocol


class _HeadTooLarge(Exception):
    """Raised from the parser's on_headers_complete to stop it at a head over MAX_HEAD_BYTES."""


REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def error_reply(status: int, message: str, default_headers=()) -> bytes:
    """A whole HTTP/1.1 response closing the connection, its body {"error": message} as the
    app's 4xx are (service/errors.py): written by the protocol itself, where no app runs yet."""
    body = json.dumps(error_body(status, message)).encode()
    head = b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
    return (b"HTTP/1.1 %d %s\r\n%scontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, REASONS[status], head, len(body), body))


def _arm_idle_timer(base):
    def connection_made(self, transport) -> None:
        base.connection_made(self, transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
    return connection_made
