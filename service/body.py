"""A request's body, read whole and bounded before any route sees it (GuardMiddleware).

Three bounds, each an explicit setting:
- one body: max_body_bytes (413), by Content-Length before a byte is read and again while
  reading (a lying or absent Content-Length gets no more in), and once more after gzip/deflate
  decoding (a zip bomb);
- all bodies at once: max_total_body_bytes, summed over the requests in progress (gRPC
  messages too), held until each request ends (`BodyBudget`). Without it, a few hundred slow uploads of 32 MiB
  each held gigabytes before any queue limit saw them. A body that does not fit is a 503 +
  Retry-After (the server is busy, the request itself is fine), before it is read when
  Content-Length says so;
- a JSON body's values: max_json_values (413), counted before it is parsed (`json_extent`, `check_json_values`).
  Parsed JSON costs ~32 bytes per number (a float object and its list slot), so a 32 MiB body
  of "0.5," parsed to ~256 MiB before any tensor-size check could refuse it.
Time bounds: each pause mid-body may last idle_timeout_s and the whole body request_timeout_s,
then 408 and the connection closes (uvicorn's idle timer is off while a request is in progress,
so a stalled upload held its buffered bytes for good).
"""
from __future__ import annotations

import asyncio
import threading
import time

from .codec import decompress
from .errors import ServiceError, unavailable, within

_OFF_LOOP_BYTES = 2**20


class BodyBudget:
    """Bytes of request bodies (REST) and messages (gRPC) held by the requests in progress,
    all of them together: one per Service. Both front ends run on one event loop; the lock
    costs nothing there and keeps the count right should that change."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self._lock = threading.Lock()

    def take(self, count: int) -> bool:
        with self._lock:
            if self.held + count > self.limit:
                return False
            self.held += count
            return True

    def give(self, count: int) -> None:
        with self._lock:
            self.held -= count


class BodyLease:
    """One request's share of a BodyBudget: grows as its body arrives (and is decoded), all
    given back by close() when the request ends, whatever way it ends."""

    def __init__(self, budget: BodyBudget):
        self.budget, self.count = budget, 0

    def grow_to(self, size: int) -> None:
        extra = size - self.count
        if extra <= 0:
            return
        if not self.budget.take(extra):
            raise unavailable(f"the server holds {self.budget.held} bytes of request bodies and this one's "
                              f"{size} would pass the limit of {self.budget.limit} (DWSERVE_MAX_TOTAL_BODY_BYTES); retry")
        self.count = size

    def close(self) -> None:
        self.budget.give(self.count)
        self.count = 0


async def read_body(receive, headers: dict[str, str], settings, lease: BodyLease, *, infer: bool):
    """The body of a POST/PUT/PATCH (`infer`: to the OIP infer route) -> its bytes (decoded when `headers` name gzip/deflate: the
    header is popped from `headers`), or None when the client went away mid-upload.
    Raises ServiceError: 400 (bad Content-Length, damaged encoding), 408 (stalled, slow), 413
    (too big, too many JSON values), 415 (unknown encoding), 503 (over the total budget)."""
    limit = settings.max_body_bytes
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError(400, f"Content-Length: expected a non-negative integer, got {declared[:40]!r}")
        if int(declared) > limit:
            raise ServiceError(413, f"body is {declared} bytes; the limit is {limit} (DWSERVE_MAX_BODY_BYTES)")
        lease.grow_to(int(declared))   # refused before a byte is read when it cannot fit
    chunks, size = [], 0
    deadline = time.monotonic() + settings.request_timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            message = await within(receive, min(settings.idle_timeout_s, left))
        except TimeoutError:
            why = (f"no byte of it for {settings.idle_timeout_s:g} s (DWSERVE_IDLE_TIMEOUT_S)"
                   if settings.idle_timeout_s < left else
                   f"not all of it within {settings.request_timeout_s:g} s (DWSERVE_REQUEST_TIMEOUT_S)")
            raise ServiceError(408, f"request body: {size} of {declared or 'its'} bytes came, then {why}; "
                                    "send the body as fast as the network allows", {"Connection": "close"}) from None
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, f"body exceeds the limit of {limit} bytes (DWSERVE_MAX_BODY_BYTES)")
        lease.grow_to(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    encoding = headers.pop("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):   # decoded here for every route, bounded alike
        body = await asyncio.to_thread(decompress, body, encoding, limit)   # off the loop: up to limit of inflating
        lease.grow_to(len(body))
    end = json_extent(body, headers, infer=infer)
    if end > _OFF_LOOP_BYTES:   # counting 32 MiB takes ~20 ms: not on the event loop
        await asyncio.to_thread(check_json_values, body, end, settings.max_json_values)
    else:
        check_json_values(body, end, settings.max_json_values)
    return body


def json_extent(body: bytes, headers: dict[str, str], *, infer: bool) -> int:
    """How many leading bytes of `body` a route reads as JSON: every body but a multipart one
    (an image: 0), whatever its Content-Type, since /infer reads an octet-stream body as JSON
    (all of it, or, `infer` alone, the Inference-Header-Content-Length header before its tensor
    bytes) and Triton's generate and repository routes read JSON under any type
    (routes_v2.json_body). Only /infer reads that header: elsewhere it bounded the count
    while the route parsed the whole body, so `Inference-Header-Content-Length: 1` skipped it."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("multipart/"):
        return 0   # /v1/classify's image upload
    header_length = headers.get("inference-header-content-length", "") if infer else ""
    return min(int(header_length), len(body)) if header_length.isdigit() else len(body)


def check_json_values(body: bytes, end: int, limit: int) -> None:
    """413 when the JSON in body[:end] (json_extent) holds more than `limit` values. Each value
    after a container's first follows a comma, and JSON parsers cap nesting (orjson at 1024),
    so commas + 1 bounds the values; commas inside strings count too, which only errs on the
    safe side. Fewer than `limit` bytes have fewer commas: skipped, so small requests pay nothing."""
    if end <= limit:
        return
    values = body.count(b",", 0, end) + 1
    if values > limit:
        raise ServiceError(413, f"JSON body holds about {values} values (one per comma); the limit is {limit} "
                                "(DWSERVE_MAX_JSON_VALUES): send large tensors in binary (tritonclient's "
                                "binary_data=True, the binary tensor extension) or over gRPC")
