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
                       request with `error_message` and the stream goes on; a request's last
                       answer carries `triton_final_response` = true (an inference has one)
  text generation      a ModelInfer or ModelStreamInfer request to the generate model with a
                       `text_input` input, as Triton's vLLM backend takes it: one answer with
                       the text, or streamed, one per piece (grpc_generate.py)
Everything else in the service (shared memory, trace, logging settings) is UNIMPLEMENTED, with
a message saying what to do instead (_UNSERVED). Beside it, gRPC's standard health service
(grpc.health.v1.Health: readiness, for Kubernetes' gRPC probes; grpc_health.py).

Replies are compressed (gzip or deflate, as the client accepts) at
--grpc-infer-response-compression-level, Triton's flag, off by default (COMPRESSION_LEVELS);
requests a client compressed are taken at any level (grpc decodes them).

Errors carry the REST status's gRPC twin (400 -> INVALID_ARGUMENT, 401 -> UNAUTHENTICATED,
404 -> NOT_FOUND, 503 -> UNAVAILABLE with a `retry-after` trailer) and the same message;
ModelInfer's trailers carry `x-request-id` (the caller's metadata, or a fresh one). Inference
is metered like REST's (service/grpc_infer.py).

Shutdown (GrpcServer.stop; on SIGTERM and at the app's lifespan exit) is REST's: health turns
NOT_SERVING, new calls are
refused at once, running ones get --graceful-shutdown-s, and those still running then are
answered UNAVAILABLE + `retry-after`, counted 503 (grpc_infer.py).
"""
from __future__ import annotations

import asyncio
import logging

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from . import __version__
from .cli import CUT_ANSWERS_S
from .errors import ServiceError
from .grpc_decode import DecodeGuard
from .grpc_health import ReadinessHealth, add_health
from .grpc_infer import InferCalls, abort
from .infer import check_version
from .triton_ext import (EXTENSIONS, metadata_of, model_config, model_stats, repository_index, serves_text,
                         repository_load, repository_unload, to_proto)

log = logging.getLogger("dwserve.grpc")


class InferenceServicer(InferCalls, pb_grpc.GRPCInferenceServiceServicer):
    """The RPCs; ModelInfer and ModelStreamInfer come from InferCalls (grpc_infer.py)."""

    # --- health and metadata ---------------------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request, context):
        """ready false for a model or version not served, as Triton answers it (its core treats
        an unresolvable model as not ready): tritonclient.grpc's is_model_ready returns False
        there instead of raising. REST's /ready answers 404 (tritonclient.http's is False too)."""
        svc = self.service
        try:
            check_version(request.version or None)
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        rt = svc.runtimes.get(request.name) if request.name in svc.model_names else None
        return pb.ModelReadyResponse(ready=rt is not None and rt.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="dwserve", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        try:
            check_version(request.version or None)
            metadata = metadata_of(request.name, self.service.runtime(request.name),
                                   text=serves_text(self.service, request.name))
        except ServiceError as exc:
            await abort(context, exc)
        return to_proto(pb.ModelMetadataResponse, metadata)

    # --- Triton's model-configuration and statistics extensions ------------------------------
    async def ModelConfig(self, request, context):
        try:
            check_version(request.version or None)
            config = model_config(request.name, self.service.runtime(request.name),
                                  text=serves_text(self.service, request.name))
        except ServiceError as exc:
            await abort(context, exc)
        from tritonclient.grpc import model_config_pb2
        return pb.ModelConfigResponse(config=to_proto(model_config_pb2.ModelConfig, config))

    async def ModelStatistics(self, request, context):
        try:
            check_version(request.version or None)
            stats = model_stats(self.service, request.name or None)
        except ServiceError as exc:
            await abort(context, exc)
        return to_proto(pb.ModelStatisticsResponse, stats)

    # --- Triton's model-repository extension (one fixed repository: repository_name is ignored)
    async def RepositoryIndex(self, request, context):
        return to_proto(pb.RepositoryIndexResponse,
                        {"models": repository_index(self.service, ready_only=request.ready)})

    async def RepositoryModelLoad(self, request, context):
        try:
            repository_load(self.service, request.model_name, dict(request.parameters))
        except ServiceError as exc:
            await abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        try:
            repository_unload(self.service, request.model_name)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.RepositoryModelUnloadResponse()


_SHARED_MEMORY = ("shared memory (Triton's extension) is not served by dwserve; send tensors in the "
                  "request itself (raw_input_contents, as tritonclient does unless told otherwise)")
# RPCs of the service not served -> why, and what to do instead. The generated servicer's
# default raised NotImplementedError: the client read "Unexpected <class 'NotImplementedError'>:
# Method not implemented!" and the server logged an ERROR traceback per call (tritonclient's
# shared-memory cleanup makes such calls routinely).
_UNSERVED = {
    **{f"{kind}SharedMemory{op}": _SHARED_MEMORY for kind in ("System", "Cuda")
       for op in ("Status", "Register", "Unregister")},
    "TraceSetting": "tracing is not served by dwserve; its timings are the Prometheus metrics "
                    "(GET /metrics) and each ModelInfer's server-timing trailer",
    "LogSettings": "log settings are not served over gRPC; set --log-level (DWSERVE_LOG_LEVEL) at start",
}


def _unserved(name: str, why: str):
    async def rpc(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name}: {why}")
    rpc.__name__ = rpc.__qualname__ = name
    return rpc


# Every RPC of the generated servicer that InferenceServicer leaves to it (a newer tritonclient
# may add some) answers so, with its reason when known.
for _name, _default in vars(pb_grpc.GRPCInferenceServiceServicer).items():
    if _name[:1].isupper() and getattr(InferenceServicer, _name) is _default:
        setattr(InferenceServicer, _name, _unserved(_name, _UNSERVED.get(_name, "not served by dwserve")))


# --grpc-infer-response-compression-level -> grpc's grpc_compression_level, as Triton passes
# its flag to grpc (ServerContext::set_compression_level). grpc turns a level into an algorithm
# the client's grpc-accept-encoding lists, ranked [gzip, deflate]: low the first, medium the
# middle, high the last, so low = gzip and medium = high = deflate for the usual client (grpc's
# own accept both; one that accepts neither gets identity). Both are zlib at grpc's fixed
# default level: the levels differ in framing, not in ratio. Server-wide (a channel option;
# grpcio has no per-call level): the other RPCs' replies are a few hundred bytes, and grpc
# sends a message that compressing does not shrink as it is.
COMPRESSION_LEVELS = {"low": 1, "medium": 2, "high": 3}


class GrpcServer:
    """The grpc.aio server, stopped as uvicorn stops REST (cli.run_server): `stop(grace)`
    refuses new calls at once and gives running ones the grace; those left are then ended by
    the servicer (cut: UNAVAILABLE + retry-after, 503), and their answers get CUT_ANSWERS_S to
    go out before grpc's own stop cuts whatever remains (a stream whose client does not read)."""

    def __init__(self, server: grpc.aio.Server, servicer: InferenceServicer, health: ReadinessHealth):
        self.server, self.servicer, self.health = server, servicer, health

    async def stop(self, grace: float) -> None:
        self.health.shut_down()   # NOT_SERVING first: health watchers (load balancers) go elsewhere
        # grpc's stop returns as soon as no call is left, so a quiet server stops at once
        stopping = asyncio.ensure_future(self.server.stop(grace + CUT_ANSWERS_S))
        done, _ = await asyncio.wait({stopping}, timeout=grace)
        if not done:
            cut = self.servicer.cut()
            if cut:
                log.warning("shutdown: %d gRPC call(s) still running when the graceful shutdown period "
                            "(--graceful-shutdown-s %g) ended were answered UNAVAILABLE", cut, grace)
        await stopping


async def start_grpc_server(service) -> tuple[GrpcServer, int]:
    """Bind `settings.host:settings.grpc_port` (0 = any free port) on the running loop.
    -> (server, bound port).

    Messages are bounded by max_body_bytes, like REST bodies, and refused naming it
    (InferCalls._infer: RESOURCE_EXHAUSTED, metered 413). grpc's own limit, which refuses a
    message from its length prefix before reading it, says only "Received message larger than
    max (N vs. M)"; it is set at twice the setting, so an overshoot up to 2x (a batch a few
    rows too big) gets the message naming the setting, at the cost of reading at most one more
    limit per call; past that grpc's bare message remains (not a client's mistake by a row).
    Replies are not bounded but by protobuf's 2 GiB, as Triton's (and REST's): one computed
    is sent (a cap there refused it after the work, RESOURCE_EXHAUSTED as if the client's fault)."""
    settings = service.settings
    limit, most = settings.max_body_bytes, 2**31 - 1   # grpc's options are C ints; protobuf's own cap
    options = [("grpc.max_receive_message_length", min(2 * limit, most)),
               ("grpc.max_send_message_length", most),
               # grpc's default (SO_REUSEPORT) let a second server bind a port one already had,
               # the kernel then sharing connections between the two: a taken port is an error,
               # as REST's is (and Triton's unless --reuse-grpc-port)
               ("grpc.so_reuseport", 0),
               # HTTP/2 streams a connection may open at once (nginx's 128, grpc-go's 100): past
               # them a client queues its calls; with maximum_concurrent_rpcs below, what grpc
               # buffers for calls the service has not yet read stays bounded
               ("grpc.max_concurrent_streams", 100)]
    level = settings.grpc_infer_response_compression_level
    if level != "none":
        options.append(("grpc.default_compression_level", COMPRESSION_LEVELS[level]))
    server = grpc.aio.server(options=options, interceptors=[DecodeGuard()],   # undecodable messages: grpc_decode.py
                             maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs)
    servicer = InferenceServicer(service)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health = add_health(service, server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    except RuntimeError:   # grpcio's own says "Failed to bind to address", naming no setting
        port = 0           # (older grpcio returned 0)
    if port == 0:
        raise RuntimeError(f"gRPC: cannot listen on {settings.host}:{settings.grpc_port} (--grpc-port, "
                           "DWSERVE_GRPC_PORT): in use by another process, or not an address of this host")
    await server.start()
    health.start()
    log.info("gRPC (OIP v2) on %s:%d%s", settings.host, port,
             "" if level == "none" else f", responses compressed ({level})")
    return GrpcServer(server, servicer, health), port
