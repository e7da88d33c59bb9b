"""ModelInfer and ModelStreamInfer of the gRPC front end (service/grpc_server.py), and how
a request's error becomes a gRPC status.

`dwserve_requests_total{status}` records the REST status code, so dashboards and alerts
count both front ends alike: a call that ends before its answer (the client's deadline or a
cancel: DEADLINE_EXCEEDED / CANCELLED at the client) is 499, never a 5xx; its latency is
dwserve_request_duration_seconds{route="infer"}, or route="generate" for a text generation
(a request with `text_input`: grpc_generate.py), as REST's generate routes.

At shutdown (grpc_server.GrpcServer.stop) the calls still running when --graceful-shutdown-s
ends are ended here (`cut`), as REST's are (middleware._cut): UNAVAILABLE, a message saying so
and a `retry-after` trailer, counted 503. grpc's own stop cut them with a bare "Cancelling all
calls", no retry-after, and the handlers counted them 499, as if the client had left.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import grpc
from tritonclient.grpc import service_pb2 as pb

from .errors import ServiceError, error_response, shutdown_cut
from .body import BodyLease
from .grpc_codec import decode_request, encode_response
from .grpc_decode import Undecodable
from .grpc_generate import generate, is_generation, without_text_output
from .handlers.tensor import server_timing
from .infer import check_version
from .logs import log_access
from .middleware import CLIENT_CLOSED, bearer_matches, observed_latency, request_id_of
from .triton_ext import serves_text

log = logging.getLogger("dwserve.grpc")
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
          503: grpc.StatusCode.UNAVAILABLE}
_SERVICE = "/inference.GRPCInferenceService/"   # the RPCs' paths, as access lines name them
_CUT = object()   # in a stream's answer queue: the server is ending the stream (shutdown)


def status_of(exc: BaseException, request_id: str = "") -> tuple[int, str, dict[str, str]]:
    known = error_response(exc)
    if known is None:
        log.exception("internal error on gRPC inference (request %s)", request_id, exc_info=exc)
        return 500, f"internal error: {type(exc).__name__}", {}
    return known


async def abort(context, exc: BaseException, request_id: str = ""):
    status, message, headers = status_of(exc, request_id)
    trailers = {k.lower(): v for k, v in headers.items()}
    if request_id:
        trailers["x-request-id"] = request_id
    if trailers:
        context.set_trailing_metadata(tuple(trailers.items()))
    await context.abort(_CODES.get(status, grpc.StatusCode.INTERNAL), message)


class InferCalls:
    """The inference RPCs, mixed into grpc_server.InferenceServicer."""

    def __init__(self, service):
        self.service = service
        self._in_flight: dict[asyncio.Task, Callable[[], None]] = {}   # call -> how cut() ends it
        self.cutting = False   # set by cut(): from then on a cancelled request is the server's 503

    def cut(self) -> int:
        """End every inference call still running (the shutdown's grace is over) -> how many.
        Their work is cancelled (queued requests are dropped, a running forward finishes
        unread) and each call answers errors.shutdown_cut() itself, counted 503."""
        self.cutting = True
        ends = list(self._in_flight.values())
        for end in ends:
            end()
        return len(ends)

    def _check_auth(self, context) -> None:
        key = self.service.settings.api_key
        if not key:
            return
        given = [v for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
        if not bearer_matches(given, key):
            raise ServiceError(401, "missing or wrong bearer token: send one metadata entry "
                                    "'authorization: Bearer <DWSERVE_API_KEY>'")

    def _metered(self, request, call: tuple, context=None, route: str = "infer") -> "_Metered":
        """The accounting of one request, as a `with` block around its work (_Metered)."""
        return _Metered(self, request, call, context, route)

    async def _infer(self, request, call: tuple, context=None):
        """One ModelInferRequest through the REST path's checks and batcher, metered like a
        REST request (a refused token too, given the call's `context`; a stream's token is
        checked once, before any of its requests) and access-logged as `call`: (RPC name,
        request id, peer). -> (ModelInferResponse, runtime Result).
        Raises what errors.error_response maps."""
        svc, name = self.service, request.model_name
        with self._metered(request, call, context) as meter:
            check_version(request.model_version or None)
            svc.runtime(name)
            handler = svc.tensor[name]
            arrays, requested, params = decode_request(request, svc.settings.max_elements, svc.settings.max_batch_size)
            if serves_text(svc, name):   # its gRPC metadata lists text_output too
                requested = without_text_output(requested)
            decoded = handler.prepare(request.id or None, params.get("depthwise_impl"), arrays, requested,
                                      timeout=params.get("timeout"))
            meter.impl = decoded.impl
            result = await handler.predict(decoded)
            response = encode_response(name, decoded.id, decoded.impl, handler.output_arrays(decoded, result))
            meter.status = 200
            return response, result

    async def _generate(self, request, call: tuple, emit, context=None, unary: bool = False) -> None:
        """A text generation (a request with text_input: grpc_generate.py), metered as REST's
        generate routes are (route "generate"); emit(response, last) per response."""
        with self._metered(request, call, context, route="generate") as meter:
            await generate(self.service, request, meter, emit, unary)

    async def _generate_unary(self, request, call: tuple, context):
        """ModelInfer's generation: one response, the whole text. -> (response, None)."""
        out = []
        await self._generate(request, call, lambda response, last: out.append(response), context, unary=True)
        return out[-1], None

    async def ModelInfer(self, request, context):
        request_id = request_id_of(dict(context.invocation_metadata() or ()))   # as REST's X-Request-ID
        # The work runs in its own task so that cut() can end it and this handler still
        # answers (cancelling grpc's handler task would leave nobody to). A client that
        # leaves cancels this handler, and with it the work it awaits.
        call = ("ModelInfer", request_id, context.peer())
        work = asyncio.ensure_future(self._generate_unary(request, call, context) if is_generation(request)
                                     else self._infer(request, call, context))
        self._in_flight[work] = work.cancel
        try:
            response, result = await work
        except asyncio.CancelledError:
            if not (self.cutting and work.cancelled()):
                raise   # the client left: nobody to answer
            await abort(context, shutdown_cut(), request_id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await abort(context, exc, request_id)
        finally:
            del self._in_flight[work]
        timing = () if result is None else (("server-timing", server_timing(result)),)   # as REST's headers
        context.set_trailing_metadata((*timing, ("x-request-id", request_id)))
        return response

    async def ModelStreamInfer(self, request_iterator, context):
        stream_id, peer = request_id_of(dict(context.invocation_metadata() or ())), context.peer()
        call = ("ModelStreamInfer", stream_id, peer)   # every request's access line, made once per stream
        try:
            self._check_auth(context)
        except ServiceError as exc:
            # Counted as REST's refused token is; no request has been read, so no model is
            # named yet: "unknown", the label of a request for no served model.
            self.service.metrics.requests.labels("unknown", self.service.settings.depthwise_impl, "401").inc()
            if self.service.settings.access_log:
                log_access("gRPC", _SERVICE + "ModelStreamInfer", 401, 0.0, stream_id, peer)
            await abort(context, exc, stream_id)
        done: asyncio.Queue = asyncio.Queue()
        pending: set[asyncio.Task] = set()
        # Requests of this stream taken but not yet answered to the client: at most what the
        # model could hold (a queue and a batch). Without the bound a client that sends
        # without reading had every request read, run (or refused) and its response kept
        # here, without limit (100k unread answers in 8 s); now its sends wait (HTTP/2 flow
        # control) until it reads.
        settings = self.service.settings
        window = asyncio.Semaphore(settings.max_queue_size + settings.max_batch_size)
        # Requests read whose last answer is not yet sent. Every request's answers end with one
        # marked last (a generation streams several), so the stream ends when the client has
        # closed its side and this is 0 (waiting for the tasks instead held a streamed
        # generation's pieces back until every request of a closed stream was done).
        unanswered = 0

        async def answer(request):
            try:
                if isinstance(request, Undecodable):   # not parsed (grpc_decode.py): answered, the stream goes on
                    raise ValueError(request.message)
                if is_generation(request):   # its responses, each marked final or not (grpc_generate.py)
                    await self._generate(request, call, lambda response, last: done.put_nowait(
                        (pb.ModelStreamInferResponse(infer_response=response), last)))
                    return
                response, _ = await self._infer(request, call)
                out = pb.ModelStreamInferResponse(infer_response=response)
            except Exception as exc:  # noqa: BLE001 - the error answers this request only
                which = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                              id=request.id)   # to match it up, as Triton's
                out = pb.ModelStreamInferResponse(error_message=status_of(exc)[1], infer_response=which)
            # Each request has one answer, so it is its last: Triton marks every stream answer
            # so (whether or not `triton_enable_empty_final_response` asked), and stream
            # clients read until they see the flag; without it they waited for ever.
            out.infer_response.parameters["triton_final_response"].bool_param = True
            done.put_nowait((out, True))

        async def read():
            nonlocal unanswered
            requests = request_iterator.__aiter__()
            try:
                while True:
                    # A place in the window first, then the next message: a message taken
                    # before its place would be held here, outside the body budget that
                    # _infer's lease keeps (one message of up to --max-body-bytes per stream).
                    await window.acquire()
                    try:
                        request = await requests.__anext__()
                    except StopAsyncIteration:
                        window.release()
                        break
                    unanswered += 1
                    task = asyncio.ensure_future(answer(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                done.put_nowait(None)   # the client closed its side (or the stream broke)

        def cut():   # the grace is over: drop this stream's requests (503 each), then end it
            for task in pending:
                task.cancel()
            done.put_nowait(_CUT)   # behind the answers already done, which still go out first

        reader = asyncio.ensure_future(read())
        self._in_flight[reader] = cut
        try:
            closed = False
            while not (closed and unanswered == 0):
                item = await done.get()
                if item is _CUT:
                    await abort(context, shutdown_cut())
                if item is None:
                    closed = True
                    continue
                out, last = item
                yield out         # resumes once grpc has taken it for the client
                if last:          # the request's last answer: its place in the window is free
                    unanswered -= 1
                    window.release()
        finally:
            del self._in_flight[reader]
            reader.cancel()
            for task in pending:
                task.cancel()


class _Metered:
    """One gRPC request metered and logged as REST's middleware does one: in flight while the
    block runs; its bytes leased from the body budget; on leaving, requests_total{status},
    request_duration_seconds{route} (for the statuses observed_latency takes) and an access
    line as `call` (RPC name, request id, peer). The block sets `impl` once known and `status`
    200 when answered; an exception gives the status errors.error_response maps (a cancel:
    499, the client left, or 503 when the server cut it at shutdown). Entering checks the
    token (given the call's `context`) and the message's size, inside the block, so a refusal
    is metered too."""

    def __init__(self, calls: InferCalls, request, call: tuple, context, route: str):
        self.calls, self.request, self.call, self.context, self.route = calls, request, call, context, route
        svc = calls.service
        name = request.model_name
        self.label = name if name in svc.model_names else "unknown"
        self.impl, self.status = svc.settings.depthwise_impl, 500

    def __enter__(self) -> "_Metered":
        svc = self.calls.service
        self.t0 = time.perf_counter()
        svc.metrics.inflight.labels(self.label).inc()
        self.lease = BodyLease(svc.bodies)   # the message's bytes, counted with REST's bodies in progress
        try:
            if self.context is not None:
                self.calls._check_auth(self.context)
            size, limit = self.request.ByteSize(), svc.settings.max_body_bytes   # (grpc_server.start_grpc_server)
            if size > limit:
                raise ServiceError(413, f"message is {size} bytes; the limit is {limit} "
                                        "(--max-body-bytes, DWSERVE_MAX_BODY_BYTES)")
            self.lease.grow_to(size)   # 503 (UNAVAILABLE) past --max-total-body-bytes
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            # The call ended under us: the client's deadline passed or it cancelled (grpc.aio
            # cancels the handler). Not an Exception, and not a server error: 499 as REST's.
            # Or the shutdown's grace ended (cut()): the server's 503, answered by the caller.
            self.status = 503 if self.calls.cutting else CLIENT_CLOSED
        elif kind is not None:
            known = error_response(exc)   # (the caller logs an unexpected one, once)
            self.status = known[0] if known is not None else 500
        svc, status, seconds = self.calls.service, self.status, time.perf_counter() - self.t0
        self.lease.close()
        if svc.settings.access_log:
            log_access("gRPC", _SERVICE + self.call[0], status, seconds, self.call[1], self.call[2],
                       self.label, self.impl)
        svc.metrics.inflight.labels(self.label).dec()
        svc.metrics.requests.labels(self.label, self.impl, str(status)).inc()
        if observed_latency(status):
            svc.metrics.request_duration.labels(self.label, self.impl, self.route).observe(seconds)
        return False
