"""Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`), beside the REST
routes, on `--grpc-port` (off unless set). `tritonclient.grpc` and KServe's gRPC clients work
unchanged.

It is the REST API's twin, not a second implementation: the same Service, the same
TensorHandler checks (`prepare`), the same batcher, limits and metrics. It runs on uvicorn's
event loop (started and stopped by the app's lifespan), so both front ends feed one batcher.

  ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata   health and metadata
  ModelConfig, ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload
                       Triton's extensions, the same content as REST's (triton_ext.py)
  ModelInfer           one request; `parameters["depthwise_impl"]` picks the impl, the
                       response's says what ran; a `server-timing` trailer splits queue and
                       compute time, like REST's Server-Timing header
  ModelStreamInfer     a bidirectional stream of requests, each answered as soon as it is
                       done (requests on one stream batch together); an error answers that
                       request with `error_message` and the stream goes on
Everything else in the service (shared memory, trace, logging settings) is UNIMPLEMENTED.

Errors carry the REST status's gRPC twin (400 -> INVALID_ARGUMENT, 401 -> UNAUTHENTICATED,
404 -> NOT_FOUND, 503 -> UNAVAILABLE with a `retry-after` trailer) and the same message;
ModelInfer's trailers carry `x-request-id` (the caller's metadata, or a fresh one).
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
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from . import __version__
from .errors import ServiceError, error_response
from .grpc_codec import decode_request, encode_response
from .handlers.tensor import server_timing
from .infer import check_version
from .middleware import CLIENT_CLOSED, bearer_matches, observed_latency, request_id_of
from .triton_ext import (EXTENSIONS, metadata_of, model_config, model_stats, repository_index,
                         repository_load, repository_unload, to_proto)

log = logging.getLogger("dwserve.grpc")
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
          503: grpc.StatusCode.UNAVAILABLE}


def _status_of(exc: BaseException, request_id: str = "") -> tuple[int, str, dict[str, str]]:
    known = error_response(exc)
    if known is None:
        log.exception("internal error on gRPC inference (request %s)", request_id, exc_info=exc)
        return 500, f"internal error: {type(exc).__name__}", {}
    return known


async def _abort(context, exc: BaseException, request_id: str = ""):
    status, message, headers = _status_of(exc, request_id)
    trailers = {k.lower(): v for k, v in headers.items()}
    if request_id:
        trailers["x-request-id"] = request_id
    if trailers:
        context.set_trailing_metadata(tuple(trailers.items()))
    await context.abort(_CODES.get(status, grpc.StatusCode.INTERNAL), message)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service):
        self.service = service

    # --- health and metadata ---------------------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request, context):
        svc = self.service
        try:
            check_version(request.version or None)
            if request.name not in svc.model_names:
                raise ServiceError(404, f"unknown model {request.name!r}; expected one of {list(svc.model_names)}")
        except ServiceError as exc:
            await _abort(context, exc)
        rt = svc.runtimes.get(request.name)
        return pb.ModelReadyResponse(ready=rt is not None and rt.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="dwserve", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        try:
            check_version(request.version or None)
            metadata = metadata_of(request.name, self.service.runtime(request.name))
        except ServiceError as exc:
            await _abort(context, exc)
        return to_proto(pb.ModelMetadataResponse, metadata)

    # --- Triton's model-configuration and statistics extensions ------------------------------
    async def ModelConfig(self, request, context):
        try:
            check_version(request.version or None)
            config = model_config(request.name, self.service.runtime(request.name))
        except ServiceError as exc:
            await _abort(context, exc)
        from tritonclient.grpc import model_config_pb2
        return pb.ModelConfigResponse(config=to_proto(model_config_pb2.ModelConfig, config))

    async def ModelStatistics(self, request, context):
        try:
            check_version(request.version or None)
            stats = model_stats(self.service, request.name or None)
        except ServiceError as exc:
            await _abort(context, exc)
        return to_proto(pb.ModelStatisticsResponse, stats)

    # --- Triton's model-repository extension (one fixed repository: repository_name is ignored)
    async def RepositoryIndex(self, request, context):
        return to_proto(pb.RepositoryIndexResponse,
                        {"models": repository_index(self.service, ready_only=request.ready)})

    async def RepositoryModelLoad(self, request, context):
        try:
            repository_load(self.service, request.model_name, dict(request.parameters))
        except ServiceError as exc:
            await _abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        try:
            repository_unload(self.service, request.model_name)
        except ServiceError as exc:
            await _abort(context, exc)
        return pb.RepositoryModelUnloadResponse()

    # --- inference -------------------------------------------------------------------------
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
            await _abort(context, exc, request_id)
        context.set_trailing_metadata((("server-timing", server_timing(result)),   # as REST's headers
                                       ("x-request-id", request_id)))
        return response

    async def ModelStreamInfer(self, request_iterator, context):
        try:
            self._check_auth(context)
        except ServiceError as exc:
            await _abort(context, exc)
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
                done.put_nowait(pb.ModelStreamInferResponse(error_message=_status_of(exc)[1], infer_response=which))

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


async def start_grpc_server(service) -> tuple[grpc.aio.Server, int]:
    """Bind `settings.host:settings.grpc_port` (0 = any free port) on the running loop.
    -> (server, bound port). Messages are bounded by max_body_bytes, like REST bodies."""
    settings = service.settings
    limit = settings.max_body_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", max(limit, 64 * 2**20))])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    if port == 0:
        raise RuntimeError(f"gRPC: cannot bind {settings.host}:{settings.grpc_port} (DWSERVE_GRPC_PORT)")
    await server.start()
    log.info("gRPC (OIP v2) on %s:%d", settings.host, port)
    return server, port
