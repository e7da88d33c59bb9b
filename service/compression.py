"""Response compression (gzip, deflate) for REST clients that ask for it: a pure-ASGI
middleware outside GuardMiddleware, so /infer (answered inside the guard) is covered too.

Why not Starlette's GZipMiddleware: it speaks gzip only (tritonclient's
`response_compression_algorithm="deflate"` would get nothing), reads Accept-Encoding as a
substring ("gzip;q=0" is taken as a yes), compresses on the event loop however large the
body, and would gzip every /v2 reply (see below). Here:

- negotiation (`negotiate`) follows RFC 9110 12.5.3: q-values, `q=0` refusals, `identity`,
  `*`, `x-gzip` as gzip; gzip wins a tie; no header or an empty one means identity;
- under /v2 only the infer route's replies are compressed, as Triton's server does: its
  clients read every other /v2 body raw. tritonclient.http.aio's aiohttp session sends
  `Accept-Encoding: gzip, deflate` on every call yet decodes only infer replies (a gzipped
  model metadata, statistics or error body failed in json.loads). The rest (/v1, OpenAI,
  /metrics: Prometheus asks for gzip, /openapi.json) follow Accept-Encoding;
- only 200s with a whole body of a declared Content-Length >= min_bytes: a response
  without one is a stream (the SSE of /v1/generate, the OpenAI routes' stream=true, Triton's
  generate_stream) and passes through untouched, each event flushed as it comes; so do
  text/event-stream, already encoded bodies, ranges, errors (small, and read raw by
  tritonclient) and HEAD (its body is GET's, dropped by the guard: there is nothing to
  compress, so it describes identity);
- a body above OFF_LOOP_BYTES is compressed in a worker thread of its own (zlib drops the GIL), so
  a large logits reply does not stall the token streams sharing the event loop;
- a body that does not shrink is sent as it was; a binary-tensor reply whose tensor bytes
  barely shrink (FP32 logits: ~7% at 8 ms for LFM2's 256 KiB, since clients such as httpx,
  requests and aiohttp ask for gzip by default) is sent as it was after compressing only a
  sample of its tail (`worth_compressing`);
- headers said of the body as sent are fixed (Content-Length, Content-Encoding) and
  `Vary: Accept-Encoding` is added to every response whose form depended on the header.
  Inference-Header-Content-Length (the binary tensor extension) keeps describing the
  uncompressed body, as Triton's server does: tritonclient decompresses, then splits there.

The status is never changed, so the guard's access log and metrics see the real one.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import re
import zlib
from typing import Optional

from .codec import CODINGS, WBITS
from .middleware import INFER_PATH

# Compressing at level 1 runs ~30-80 MiB/s on one shared core: 64 KiB is ~1-2 ms on the
# loop; above it the ~0.1 ms of a thread hop is noise beside the work it moves off.
OFF_LOOP_BYTES = 64 * 2**10
# Its own threads, not the loop's default pool: there /v1/completions' logprobs scoring waits
# for the compute thread, and replies ready to go would queue behind it.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dwserve-compress")
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")   # RFC 9110 12.4.2


def negotiate(accept_encoding: Optional[str]) -> Optional[str]:
    """An Accept-Encoding value -> "gzip", "deflate", or None (send identity). An element with
    a malformed q-value is ignored; a coding listed twice takes its lower weight (a refusal
    stands). Identity is weighed only when named (or by `*`): `gzip;q=0.5` alone asks for gzip
    (unnamed, identity is a fallback, not a preference), `gzip;q=0.5, identity` asks for none."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        name, *params = element.split(";")
        name = name.strip().lower()
        name = CODINGS.get(name, name)   # x-gzip is gzip
        if not name:
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.fullmatch(value) else -1.0
        if weight >= 0:
            weights[name] = min(weight, weights.get(name, weight))
    star = weights.get("*")
    gzip = weights.get("gzip", star or 0.0)
    deflate = weights.get("deflate", star or 0.0)
    identity = weights.get("identity", star or 0.0)
    coding, best = ("gzip", gzip) if gzip >= deflate else ("deflate", deflate)
    return coding if best > 0 and best >= identity else None


PROBE_BYTES = 8 * 2**10     # a tail sample, ~0.25 ms to compress at level 1
MIN_SAVING = 0.1            # compressing that saves less is CPU spent for nothing on a LAN


def worth_compressing(body: bytes, level: int, binary: bool) -> bool:
    """False when `body` is a binary-tensor reply (JSON header, then raw tensor bytes) whose
    tail sample shrinks by less than MIN_SAVING: float tensors are near-incompressible, while
    token ids, masks and JSON shrink 2x or more. Text bodies are always worth it."""
    if not binary or len(body) < 4 * PROBE_BYTES:
        return True
    sample = body[-PROBE_BYTES:]
    return len(zlib.compress(sample, level)) <= (1 - MIN_SAVING) * len(sample)   # (the format's framing: noise)


def compress(body: bytes, coding: str, level: int) -> bytes:
    """body in `coding` (gzip: mtime 0, so equal bodies compress to equal bytes)."""
    stream = zlib.compressobj(level, zlib.DEFLATED, WBITS[coding])
    return stream.compress(body) + stream.flush()


def _header(headers, name: bytes) -> Optional[bytes]:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _with_vary(headers: list) -> list:
    vary = _header(headers, b"vary")
    if vary is None:
        return [*headers, (b"vary", b"Accept-Encoding")]
    tokens = {t.strip().lower() for t in vary.split(b",")}
    if b"*" in tokens or b"accept-encoding" in tokens:
        return headers
    return [(k, v + b", Accept-Encoding" if k.lower() == b"vary" else v) for k, v in headers]


class CompressionMiddleware:
    """level 0 turns it off (zlib's level 0 stores without compressing: identity says that
    better); min_bytes: smaller bodies go as they are (one packet either way)."""

    def __init__(self, app, min_bytes: int, level: int):
        self.app, self.min_bytes, self.level = app, min_bytes, level

    def _eligible(self, start: dict) -> bool:
        """Whether the response's form depends on Accept-Encoding: a 200 with a whole body of
        a declared length, big enough, not encoded, not a stream."""
        headers = start.get("headers", ())
        length = _header(headers, b"content-length")
        return (start["status"] == 200 and length is not None and length.isdigit() and int(length) >= self.min_bytes
                and _header(headers, b"content-encoding") is None and _header(headers, b"content-range") is None
                and not (_header(headers, b"content-type") or b"").lower().startswith(b"text/event-stream"))

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        # outside the guard: the path may still end in the slash the guard drops
        other_v2 = path.startswith("/v2") and not INFER_PATH.match(path.rstrip("/"))
        if scope["type"] != "http" or self.level == 0 or other_v2:
            return await self.app(scope, receive, send)
        asked = b",".join(v for k, v in scope["headers"] if k.lower() == b"accept-encoding")
        coding = None if scope["method"] == "HEAD" else negotiate(asked.decode("latin-1"))
        start: Optional[dict] = None   # held while its body is gathered
        chunks: list[bytes] = []
        passing = False                # decided: everything goes out as it comes

        async def send_compressed(message):
            nonlocal start, passing
            if passing or message["type"] not in ("http.response.start", "http.response.body"):
                return await send(message)
            if message["type"] == "http.response.start":
                if not self._eligible(message):
                    passing = True
                    return await send(message)
                message = {**message, "headers": _with_vary(list(message.get("headers", ())))}
                if coding is None:
                    passing = True
                    return await send(message)
                start = message
                return None
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return None   # bounded: the body's declared Content-Length
            passing = True
            await self._send_whole(start, b"".join(chunks), coding, send)

        await self.app(scope, receive, send_compressed)

    async def _send_whole(self, start: dict, body: bytes, coding: str, send) -> None:
        binary = _header(start["headers"], b"inference-header-content-length") is not None
        packed = body
        if not worth_compressing(body, self.level, binary):
            pass
        elif len(body) > OFF_LOOP_BYTES:
            try:
                packed = await asyncio.get_running_loop().run_in_executor(_POOL, compress, body, coding, self.level)
            except asyncio.CancelledError:
                # Shutdown's cut (uvicorn cancels what runs past the grace) while the start is
                # held: nothing sent, uvicorn would answer its own 500 to a request the guard
                # counted 200. The reply is whole: it goes as it is, then the cut goes on.
                await send(start)
                await send({"type": "http.response.body", "body": body})
                raise
        else:
            packed = compress(body, coding, self.level)
        if len(packed) < len(body):
            kept = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            start = {**start, "headers": [*kept, (b"content-encoding", coding.encode()),
                                          (b"content-length", str(len(packed)).encode())]}
            body = packed
        await send(start)
        await send({"type": "http.response.body", "body": body})
