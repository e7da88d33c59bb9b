"""ModelInfer and ModelStreamInfer of the gRPC front end (service/grpc_server.py), and how
a request's error becomes a gRPC status.

`dwserve_requests_total{status}` records the REST status code, so dashboards and alerts
count both front ends alike: a call that ends before its answer (the client's deadline or a
cancel: DEADLINE_EXCEEDED / CANCELLED at the client) is 499, never a 5xx; its latency is
dwserve_request_duration_seconds{route="infer"}.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc
from tritonclient.grpc import service_pb2 as pb

from .errors import ServiceError, error_response
from .grpc_codec import decode_request, encode_response
from .handlers.tensor import server_timing
from .infer import check_version
from .middleware import CLIENT_CLOSED, bearer_matches, observed_latency, request_id_of

log = logging.getLogger("dwserve.grpc")
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
          503: grpc.StatusCode.UNAVAILABLE}


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
    """The inference RPCs, mixed into grpc_server.InferenceServicer (which sets .service)."""

    def _check_auth(self, context) -> None:
        key = self.service.settings.api_key
        if not key:
            return
        if not bearer_matches(dict(context.invocation_metadata() or ()).get("authorization", ""), key):
            raise ServiceError(401, "missing or wrong bearer token: send metadata "
                                    "'authorization: Bearer <DWSERVE_API_KEY>'")

    async def _infer(self, request):
        """One ModelInferRequest through the REST path's checks and batcher, metered like a
        REST request. -> (ModelInferResponse, runtime Result). Raises what
        errors.error_response maps."""
        svc, metrics = self.service, self.service.metrics
        name = request.model_name
        label = name if name in svc.model_names else "unknown"
        impl, status, t0 = svc.settings.depthwise_impl, 500, time.perf_counter()
        metrics.inflight.labels(label).inc()
        try:
            check_version(request.model_version or None)
            svc.runtime(name)
            handler = svc.tensor[name]
            arrays, requested, params = decode_request(request, svc.settings.max_elements)
            decoded = handler.prepare(request.id or None, params.get("depthwise_impl"), arrays, requested)
            impl = decoded.impl
            result = await handler.predict(decoded)
            response = encode_response(name, decoded.id, decoded.impl, handler.output_arrays(decoded, result))
            status = 200
            return response, result
        except asyncio.CancelledError:
            # The call ended under us: the client's deadline passed or it cancelled (grpc.aio
            # cancels the handler). Not an Exception, and not a server error: 499 as REST's.
            status = CLIENT_CLOSED
            raise
        except Exception as exc:
            known = error_response(exc)   # (the caller logs an unexpected one, once)
            status = known[0] if known is not None else 500
            raise
        finally:
            metrics.inflight.labels(label).dec()
            metrics.requests.labels(label, impl, str(status)).inc()
            if observed_latency(status):
                metrics.request_duration.labels(label, impl, "infer").observe(time.perf_counter() - t0)

    async def ModelInfer(self, request, context):
        request_id = request_id_of(dict(context.invocation_metadata() or ()))   # as REST's X-Request-ID
        try:
            self._check_auth(context)
            response, result = await self._infer(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await abort(context, exc, request_id)
        context.set_trailing_metadata((("server-timing", server_timing(result)),   # as REST's headers
                                       ("x-request-id", request_id)))
        return response

    async def ModelStreamInfer(self, request_iterator, context):
        try:
            self._check_auth(context)
        except ServiceError as exc:
            await abort(context, exc)
        done: asyncio.Queue = asyncio.Queue()
        pending: set[asyncio.Task] = set()
        # Requests of this stream taken but not yet answered to the client: at most what the
        # model could hold (a queue and a batch). Without the bound a client that sends
        # without reading had every request read, run (or refused) and its response kept
        # here, without limit (100k unread answers in 8 s); now its sends wait (HTTP/2 flow
        # control) until it reads.
        settings = self.service.settings
        window = asyncio.Semaphore(settings.max_queue_size + settings.max_batch_size)

        async def answer(request):
            try:
                response, _ = await self._infer(request)
                done.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            except Exception as exc:  # noqa: BLE001 - the error answers this request only
                which = pb.ModelInferResponse(model_name=request.model_name, id=request.id)   # to match it up
                done.put_nowait(pb.ModelStreamInferResponse(error_message=status_of(exc)[1], infer_response=which))

        async def read():
            try:
                async for request in request_iterator:
                    await window.acquire()
                    task = asyncio.ensure_future(answer(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                done.put_nowait(None)   # the client closed its side (or the stream broke)

        reader = asyncio.ensure_future(read())
        try:
            closed = False
            while not (closed and not pending and done.empty()):
                item = await done.get()
                if item is None:
                    closed = True
                    if pending:
                        await asyncio.wait(set(pending))
                    continue
                yield item        # resumes once grpc has taken it for the client
                window.release()
        finally:
            reader.cancel()
            for task in pending:
                task.cancel()
