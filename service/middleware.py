"""Pure-ASGI guard around the whole app (runs before FastAPI parses anything):

1. body limits (service/body.py): the body is buffered here, bounded, and replayed to the
   app, so no route ever sees an oversized one: 413 above max_body_bytes (declared or
   streamed, and once gzip/deflate decoded: the app sees the decoded body without the
   header) or above max_json_values values, 503 + Retry-After when every body in progress
   together would pass max_total_body_bytes, 408 for a stalled or slow upload;
2. bearer auth (DWSERVE_API_KEY) on inference routes: 401 before the body is read;
3. X-Request-ID: the client's (a printable token of <= 128 characters) or a fresh one, on
   every response, in every logged error and in the request's access line (service/logs.py);
   X-Depthwise-Impl on inference responses: the policy the request ran under (the metrics'
   impl label);
4. per-request metrics for inference routes (POST only: a GET/PUT/OPTIONS on /infer is a 405
   of no model's and is not metered): inflight gauge, requests_total{status},
   request_duration{route}. Labels come from the path; handlers refine `impl` by setting
   scope["state"]["dw_impl"] once the request's impl is known. A client that goes away
   before it is answered (mid-upload, while its request waits, or mid-stream: its 200 was sent
   but not its end) is status 499 ("client closed request", nginx's code), never a 5xx or a
   200: the 5xx alerts must not page on clients, nor a cut stream count as served;
   see `observed_latency` for which statuses the latency histogram takes;
5. POST /v2/models/{m}/infer is answered here, from the buffered body, by the same
   function the FastAPI route runs (service/infer.py says why); errors map through
   errors.error_response like the app's exception handlers;
6. HEAD is GET without the body (RFC 9110), for every GET route: load balancers probe
   /v2/health/live and /v2/health/ready with HEAD; a trailing slash is dropped from every path;
7. a request still running when SIGTERM's --graceful-shutdown-s runs out (uvicorn cancels
   it) is answered 503 + Retry-After, or, mid-stream, cut with a log line naming it: see `_cut`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid

from .body import BodyLease, read_body
from .errors import ServiceError, error_body, error_response, is_openai_path, shutdown_cut
from .infer import infer_bytes
from .logs import log_access

log = logging.getLogger("dwserve.app")

# The OIP infer route, answered here (_infer); compression.py reads it too (the only /v2 replies it compresses).
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
# Every /v2 route metered per model: OIP infer and Triton's generate extension.
_MODEL_ROUTE = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/(infer|generate|generate_stream)$")
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")   # printable ASCII, no spaces
# Said of the body as sent, so dropped once it is decoded: the app sees the decoded body.
_ENCODED_HEADERS = (b"content-encoding", b"content-length")
# Headers the guard reads from a dict (the last value wins) where Starlette's routes read the
# first: sent twice they could disagree (JSON to the routes, multipart to the JSON-value count).
_ONCE_HEADERS = frozenset((b"content-type", b"content-encoding", b"content-length", b"transfer-encoding",
                           b"inference-header-content-length"))
_GENERATE_PATHS = ("/v1/generate", "/v1/completions", "/v1/chat/completions")
CLIENT_CLOSED = 499   # nginx's "client closed request": the client gave up, not a server error


def observed_latency(status: int) -> bool:
    """Whether a request's time goes into dwserve_request_duration_seconds (it is counted in
    dwserve_requests_total{status} either way). Rejections are left out: a 4xx (bad input,
    auth, size: answered before any model work), a 499 (the client gave up: its time is
    when it left, not how long the answer took) and a 503 (queue full, loading, draining:
    shed in microseconds) would each pull the latency quantiles, and so the p99 SLO, down by
    being fast exactly when the service is in trouble. Every 503 (a request timeout too) is
    still in requests_total, where DwserveQueueSaturated pages at a 1% ratio: the same tail
    the p99 SLO watches. Served requests (2xx) and server failures (other 5xx) are observed."""
    return not (400 <= status < 500 or status == 503)


def bearer_matches(authorizations: list[str], key: str) -> bool:
    """The request's `Authorization` values (HTTP headers or gRPC metadata, all of them): exactly
    one, `Bearer <key>`, compared in constant time. Two are refused: which one counts differs
    between a proxy in front (often the first) and here (a dict keeps the last), so a client
    could pass a proxy's check with one and ours with the other."""
    if len(authorizations) != 1:
        return False
    authorization = authorizations[0]
    token = authorization[7:] if authorization[:7].lower() == "bearer " else ""
    return hmac.compare_digest(token.encode(), key.encode())


def request_id_of(headers) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one: every response
    carries it back and every logged error names it, so a client's report finds the log line."""
    given = headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _json_response(status: int, message: str, extra_headers=(), path: str = ""):
    # the guard's one 401 is a missing or wrong key: OpenAI's code for it, on its routes
    code = "invalid_api_key" if status == 401 else None
    body = json.dumps(error_body(status, message, openai=is_openai_path(path), code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra_headers]
    return {"type": "http.response.start", "status": status, "headers": headers}, \
        {"type": "http.response.body", "body": body}


async def client_gone(receive) -> None:
    """Returns once the client has gone: the ASGI `receive` gives http.disconnect (any body
    left unread is skipped). The one watcher of the middleware's /infer and of disconnect.py."""
    while (await receive())["type"] != "http.disconnect":
        pass


class GuardMiddleware:
    def __init__(self, app, service):
        self.app, self.service = app, service

    def _route_model(self, method: str, path: str):
        """-> (model label, route label) for a metered inference request, else (None, None).
        Every inference route serves POST only; another method gets the router's 405 and is
        no model's request. route (dwserve_request_duration_seconds's label): "infer" (OIP),
        "classify", or "generate" (every generation route, streamed or not: seconds by nature,
        kept apart from the one-shot routes' latency SLO)."""
        if method != "POST":
            return None, None
        svc = self.service
        match = _MODEL_ROUTE.match(path)
        if match:
            name = match.group(1)
            return (name if name in svc.model_names else "unknown"), \
                ("infer" if match.group(2) == "infer" else "generate")
        if path == "/v1/classify":
            return svc.classify_model or "unknown", "classify"
        if path in _GENERATE_PATHS:
            return svc.generate_model or "unknown", "generate"
        return None, None

    async def _infer(self, match, headers, body, state, send, reject, receive):
        """The infer call, raced against the client leaving (`receive` gives http.disconnect
        once the body is read). A client that timed out and went away while its request was
        queued used to keep its place: the forward still ran (counted 200), and in an overload
        every later request waited behind work nobody would read. Now its future is cancelled
        (the batcher drops it unrun; a forward already running finishes) and it is a 499."""
        work = asyncio.ensure_future(infer_bytes(self.service, match.group(1), match.group(2),
                                                 headers, body, state))
        gone = asyncio.ensure_future(client_gone(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                return   # nobody to answer: the finally below cancels the work; metered 499
            content, out_headers = work.result()
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            known = error_response(exc)
            if known is None:
                log.exception("internal error on %s (request %s)", match.group(0), state.get("request_id"))
                known = 500, f"internal error: {type(exc).__name__}", {}
            return await reject(known[0], known[1], tuple(known[2].items()))
        finally:   # also when this task is cancelled (shutdown): no work left running unwatched
            for task in (work, gone):
                task.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    async def _cut(scope, request_id: str, can_answer: bool, reject) -> None:
        """The request's task was cancelled: uvicorn does that to every request still running
        when --graceful-shutdown-s has passed after SIGTERM (nothing else cancels a request
        task; a client that leaves is seen through receive). Left to uvicorn, each one logged
        an "Exception in ASGI application" traceback and got a plain-text 500, metered as a
        500 that the 5xx alerts page on, on every rollout that outlasts the grace period. It
        is the draining server's 503 + Retry-After instead (its work is already cancelled:
        sequences leave their rows, queued items are dropped); a reply already under way (a
        stream) cannot change its status, so it ends there (the client sees the connection cut),
        logged here naming the request; uvicorn then logs its own unattributed "ASGI callable
        returned without completing response"."""
        if can_answer:
            cut = shutdown_cut()
            return await reject(cut.status, cut.message, [(k.lower(), v) for k, v in cut.headers.items()])
        log.warning("shutdown: %s %s (request %s) was cut short: the graceful shutdown period ended mid-reply",
                    scope["method"], scope["path"], request_id)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        settings = self.service.settings
        if len(scope["path"]) > 1 and scope["path"].endswith("/"):
            # /v2/models/m/infer/ is /v2/models/m/infer: Starlette answered a 307 to an absolute
            # http:// URL (wrong behind a TLS proxy; tritonclient does not follow it), unmetered
            scope = {**scope, "path": scope["path"].rstrip("/") or "/",
                     "raw_path": scope.get("raw_path", b"").rstrip(b"/") or b"/"}
        head = scope["method"] == "HEAD"
        if head:   # answered as GET, body dropped below (Content-Length stays GET's, as RFC 9110 allows)
            scope = {**scope, "method": "GET"}
        model, route = self._route_model(scope["method"], scope["path"])
        state = scope.setdefault("state", {})
        state["dw_impl"] = settings.depthwise_impl
        status_box = [None]        # the response's status once it starts
        disconnected = [False]     # the client went away (http.disconnect seen)
        completed = [False]        # the response's last body message was sent
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = state["request_id"] = request_id_of(headers)
        metrics = self.service.metrics
        if model is not None:
            metrics.inflight.labels(model).inc()
        lease = BodyLease(self.service.bodies)   # this request's body bytes, given back when it ends

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if model is not None:   # inference routes: the depthwise policy the request ran under
                    extra.append((b"x-depthwise-impl", str(state.get("dw_impl", settings.depthwise_impl)).encode()))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif message["type"] == "http.response.body":
                completed[0] = not message.get("more_body", False)
                if head:
                    message = {**message, "body": b""}
            await send(message)

        async def receive_watched():
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected[0] = True
            return message

        async def reject(status, message, headers=()):
            start, body = _json_response(status, message, headers, scope["path"])
            await send_wrapped(start)
            await send_wrapped(body)

        async def call_app(receive_from):
            """The app, with an unhandled exception answered here. Left to Starlette's
            ServerErrorMiddleware (outside this one), the 500 went out through the raw send
            (no X-Request-ID) and the exception was re-raised for uvicorn to log a second
            traceback naming no request."""
            try:
                return await self.app(scope, receive_from, send_wrapped)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
                log.exception("internal error on %s (request %s)", scope["path"], request_id)
                if status_box[0] is not None:
                    raise   # mid-response (a stream): uvicorn closes the connection
                return await reject(500, f"internal error: {type(exc).__name__}")

        try:
            names = [k.lower() for k, _ in scope["headers"] if k.lower() in _ONCE_HEADERS]
            if len(names) != len(set(names)):
                twice = sorted({n.decode() for n in names if names.count(n) > 1})
                return await reject(400, f"request header {', '.join(twice)} sent more than once; send each once")
            if model is not None and settings.api_key:
                given = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"]
                if not bearer_matches(given, settings.api_key):
                    return await reject(401, "missing or wrong bearer token: send one 'Authorization: Bearer "
                                             "<DWSERVE_API_KEY>' header",
                                        [("www-authenticate", "Bearer")])
            if scope["method"] in ("POST", "PUT", "PATCH"):
                encoded = headers.get("content-encoding", "").strip().lower() not in ("", "identity")
                infer = INFER_PATH.match(scope["path"]) if scope["method"] == "POST" else None
                try:   # bounded in size, time and, with every other body in progress, total (service/body.py)
                    body = await read_body(receive_watched, headers, settings, lease, infer=infer is not None)
                except (ValueError, ServiceError) as exc:
                    status, message, extra = error_response(exc)
                    return await reject(status, message, [(k.lower(), v) for k, v in extra.items()])
                if body is None:
                    return  # client went away mid-upload (499 below); nothing to answer
                replayed = False
                if encoded:   # decoded by read_body: the app sees the body as it is now, without the header
                    kept = [(k, v) for k, v in scope["headers"] if k.lower() not in _ENCODED_HEADERS]
                    scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode())]}
                if infer is not None:
                    return await self._infer(infer, headers, body, state, send_wrapped, reject, receive_watched)

                async def replay():
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive_watched()  # afterwards: disconnect notifications (SSE)

                return await call_app(replay)
            return await call_app(receive_watched)
        except asyncio.CancelledError:
            return await self._cut(scope, request_id, status_box[0] is None and not disconnected[0], reject)
        finally:
            lease.close()
            # No response started: the client left (499), or nothing answered it (500); a response
            # the client left before its end (a stream) is a 499 too.
            status = status_box[0] or (CLIENT_CLOSED if disconnected[0] else 500)
            if disconnected[0] and status_box[0] is not None and not completed[0]:
                status = CLIENT_CLOSED
            impl = state.get("dw_impl", settings.depthwise_impl)
            if settings.access_log:
                log_access("HEAD" if head else scope["method"], scope["path"], status, time.perf_counter() - t0,
                           request_id, scope.get("client"), model, impl)   # (impl logged only with a model)
            if model is not None:
                metrics.inflight.labels(model).dec()
                metrics.requests.labels(model, impl, str(status)).inc()
                if observed_latency(status):
                    metrics.request_duration.labels(model, impl, route).observe(time.perf_counter() - t0)
