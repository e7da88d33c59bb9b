"""Pure-ASGI guard around the whole app (runs before FastAPI parses anything):

1. body limit: 413 when Content-Length exceeds max_body_bytes, and again while reading
   the stream (a lying or absent Content-Length cannot get more in). The body is buffered
   here (bounded) and replayed to the app, so no route ever sees an oversized body;
2. bearer auth (DWSERVE_API_KEY) on inference routes: 401 before the body is read;
3. X-Request-ID: the client's (a printable token of <= 128 characters) or a fresh one, on
   every response and in every logged error; X-Depthwise-Impl on inference responses: the
   policy the request ran under (the metrics' impl label);
4. per-request metrics for inference routes: inflight gauge, requests_total{status},
   request_duration. Labels come from the path; handlers refine `impl` by setting
   scope["state"]["dw_impl"] once the request's impl is known;
5. POST /v2/models/{m}/infer is answered here, from the buffered body, by the same
   function the FastAPI route runs (service/infer.py says why); errors map through
   errors.error_response like the app's exception handlers.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid

from .errors import error_response
from .infer import infer_bytes

log = logging.getLogger("dwserve.app")

_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
# Every /v2 route metered per model: OIP infer and Triton's generate extension.
_MODEL_ROUTE = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/(?:infer|generate|generate_stream)$")
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")   # printable ASCII, no spaces


def bearer_matches(authorization: str, key: str) -> bool:
    """An `Authorization: Bearer <key>` value (HTTP header or gRPC metadata), compared in
    constant time."""
    token = authorization[7:] if authorization[:7].lower() == "bearer " else ""
    return hmac.compare_digest(token.encode(), key.encode())


def request_id_of(headers) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one: every response
    carries it back and every logged error names it, so a client's report finds the log line."""
    given = headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _json_response(status: int, message: str, extra_headers=()):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra_headers]
    return {"type": "http.response.start", "status": status, "headers": headers}, \
        {"type": "http.response.body", "body": body}


class GuardMiddleware:
    def __init__(self, app, service):
        self.app, self.service = app, service

    def _route_model(self, path: str):
        """-> model label for inference routes, else None."""
        svc = self.service
        match = _MODEL_ROUTE.match(path)
        if match:
            name = match.group(1)
            return name if name in svc.model_names else "unknown"
        if path == "/v1/classify":
            return svc.classify_model or "unknown"
        if path in ("/v1/generate", "/v1/completions", "/v1/chat/completions"):
            return svc.generate_model or "unknown"
        return None

    async def _infer(self, match, headers, body, state, send, reject):
        try:
            content, out_headers = await infer_bytes(self.service, match.group(1), match.group(2),
                                                     headers, body, state)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            known = error_response(exc)
            if known is None:
                log.exception("internal error on %s (request %s)", match.group(0), state.get("request_id"))
                known = 500, f"internal error: {type(exc).__name__}", {}
            return await reject(known[0], known[1], tuple(known[2].items()))
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": content})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        settings = self.service.settings
        model = self._route_model(scope["path"])
        state = scope.setdefault("state", {})
        state["dw_impl"] = settings.depthwise_impl
        status_box = [500]
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = state["request_id"] = request_id_of(headers)
        metrics = self.service.metrics
        if model is not None:
            metrics.inflight.labels(model).inc()

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if model is not None:   # inference routes: the depthwise policy the request ran under
                    extra.append((b"x-depthwise-impl", str(state.get("dw_impl", settings.depthwise_impl)).encode()))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        async def reject(status, message, headers=()):
            start, body = _json_response(status, message, headers)
            await send_wrapped(start)
            await send_wrapped(body)

        try:
            if model is not None and settings.api_key:
                if not bearer_matches(headers.get("authorization", ""), settings.api_key):
                    return await reject(401, "missing or wrong bearer token: send 'Authorization: Bearer <DWSERVE_API_KEY>'",
                                        [("www-authenticate", "Bearer")])
            if scope["method"] in ("POST", "PUT", "PATCH"):
                limit = settings.max_body_bytes
                declared = headers.get("content-length")
                if declared is not None:
                    if not declared.isdigit():
                        return await reject(400, f"Content-Length: expected a non-negative integer, got {declared[:40]!r}")
                    if int(declared) > limit:
                        return await reject(413, f"body is {declared} bytes; the limit is {limit} (DWSERVE_MAX_BODY_BYTES)")
                chunks, size = [], 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # client went away mid-upload; nothing to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return await reject(413, f"body exceeds the limit of {limit} bytes (DWSERVE_MAX_BODY_BYTES)")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                body, replayed = b"".join(chunks), False
                infer = _INFER.match(scope["path"]) if scope["method"] == "POST" else None
                if infer is not None:
                    return await self._infer(infer, headers, body, state, send_wrapped, reject)

                async def replay():
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()  # afterwards: disconnect notifications (SSE)

                return await self.app(scope, replay, send_wrapped)
            return await self.app(scope, receive, send_wrapped)
        finally:
            if model is not None:
                impl = state.get("dw_impl", settings.depthwise_impl)
                metrics.inflight.labels(model).dec()
                metrics.requests.labels(model, impl, str(status_box[0])).inc()
                metrics.request_duration.labels(model, impl).observe(time.perf_counter() - t0)
