"""create_app(settings, models=None): the FastAPI app, its model loading and error shapes.

Start-up order (so orchestrators can probe from the first second):
  uvicorn accepts connections -> /v2/health/live is 200 at once
  a loader thread has the compute thread (service.compute) build each model, starts its
  batcher, and has it warm up (compile the configured impl, measure launches) -> only then
  /v2/health/ready turns 200. Every forward of every model runs on that compute thread.
Shutdown (SIGTERM): uvicorn stops accepting and waits for in-flight requests; then the
lifespan exit drains the generation scheduler and every batcher (Service.stop), so accepted
work finishes before the process ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .batching import BatcherStopped, QueueFull
from .compute import ComputeThread
from .errors import (ServiceError, error_body, error_param, error_response, http_error, is_openai_path,
                     openai_param, unknown_model, validation_message)
from .handlers import ClassifyHandler, GenerateHandler, TensorHandler
from .metrics import ServiceMetrics
from .body import BodyBudget
from .middleware import GuardMiddleware
from .compression import CompressionMiddleware
from .runtime import ModelRuntime, default_hooks
from .schemas import InferRequest, RepositoryIndexRequest, RepositoryModelRequest, TritonGenerateRequest
from .settings import Settings

log = logging.getLogger("dwserve.app")
CLASSIFY_MODEL, GENERATE_MODEL = "mobilenet_v2", "lfm2"


class Service:
    """Everything the routes need, hung on app.state.service."""

    def __init__(self, settings: Settings, models: Optional[dict] = None, hooks=None):
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.bodies = BodyBudget(settings.total_body_limit)   # request bodies held at once, REST and gRPC
        self.hooks = hooks
        self.prebuilt = models
        self.model_names = tuple(models) if models is not None else tuple(n for n, _ in settings.model_entries())
        self.classify_model = CLASSIFY_MODEL if CLASSIFY_MODEL in self.model_names else None
        self.generate_model = GENERATE_MODEL if GENERATE_MODEL in self.model_names else None
        self.runtimes: dict[str, ModelRuntime] = {}
        self.tensor: dict[str, TensorHandler] = {}
        self.classify: Optional[ClassifyHandler] = None
        self.generate: Optional[GenerateHandler] = None
        self.load_error: Optional[str] = None
        self.on_load_error = None  # set by the CLI: stop the server (exit 1) instead of never turning ready
        self._loaded = threading.Event()
        # the loader thread adds runtimes while the loop reads them and a shutdown may stop
        # them: both under _lock, and once _stopping no runtime starts (shutdown mid-loading)
        self._lock = threading.Lock()
        self._stopping = False
        self._started: list[ModelRuntime] = []      # runtimes started, warm or not
        self.compute: Optional[ComputeThread] = None   # started by load(): all torch work runs there
        self.grpc_port: Optional[int] = None           # bound gRPC port once serving (settings.grpc_port)
        self._grpc = self._grpc_loop = self._grpc_stopping = None

    @property
    def ready(self) -> bool:
        # list(): one C-level copy; a generator over the live view raced the loader's inserts
        runtimes = list(self.runtimes.values())
        return (self._loaded.is_set() and self.load_error is None and not self._stopping
                and len(runtimes) == len(self.model_names) and all(r.ready for r in runtimes))

    def load(self) -> None:
        """Loader thread: build, start and warm every model, then flip readiness."""
        try:
            import torch

            if self.settings.keep_freed_memory:
                from models.allocator import keep_freed_memory
                keep_freed_memory()
            with self._lock:                  # stop() shuts down the compute thread it sees
                if self._stopping:
                    return
                self.compute = ComputeThread()
            device = self.settings.resolved_device()
            if self.settings.torch_threads:
                self.compute.call(torch.set_num_threads, self.settings.torch_threads)
            self.metrics.set_build_info(__version__, torch.__version__, device)
            if self.hooks is None:
                self.hooks = default_hooks()
            for name in self.model_names:
                served = self.prebuilt[name] if self.prebuilt is not None else self.compute.call(self._build, name, device)
                with self._lock:
                    if self._stopping:
                        log.info("shutdown during loading: %s not started", name)
                        return
                    rt = ModelRuntime(served, self.settings, self.metrics, self.hooks, self.compute).start()
                    self._started.append(rt)
                self.metrics.set_model_info(name, getattr(served, "metadata", None) or {})
                rt.warmup()
                self.tensor[name] = TensorHandler().setup(rt)
                if name == self.classify_model:
                    self.classify = ClassifyHandler().setup(rt)
                generate = GenerateHandler().setup(rt) if name == self.generate_model else None
                with self._lock:   # stop() takes `generate` under it: published here, or stopped here
                    if self._stopping:
                        if generate is not None:    # its scheduler thread started after stop() looked
                            generate.stop(timeout=self.settings.graceful_shutdown_s)
                        log.info("shutdown during loading: %s not served", name)
                        return
                    if generate is not None:
                        self.generate = generate
                self.runtimes[name] = rt          # last: routes find its handlers set up
            log.info("ready: %s on %s, depthwise_impl=%s", ", ".join(self.model_names), device,
                     self.settings.depthwise_impl)
        except Exception as exc:  # noqa: BLE001 - stays live but never ready; the reason is logged and shown
            if self._stopping:                # its runtime or compute thread was stopped under it
                log.info("shutdown during loading: %s", exc)
                return
            if isinstance(exc, ValueError):   # a bad checkpoint or setting, said in its message: one line
                log.error("model loading failed: %s", exc)
            else:                             # anything else is a bug: its traceback
                log.exception("model loading failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
            if self.on_load_error is not None:
                self.on_load_error()
        finally:
            self._loaded.set()

    def _build(self, name: str, device: str):
        from models.registry import build_model

        path = dict(self.settings.model_entries())[name]
        log.info("loading %s from %s", name, path or "embedded defaults")
        served = build_model(name, path, device=device, dtype=self.settings.resolved_dtype(device),
                             seed=self.settings.seed)
        if hasattr(served.module, "row_chunk_bytes"):          # MobileNetV2 (models/row_chunks.py)
            served.module.row_chunk_bytes = (self.settings.cpu_row_chunk_mib << 20) or None
        if self.settings.cuda_graphs and hasattr(served, "use_cuda_graphs") and served.device.type == "cuda":
            served.use_cuda_graphs(True)
        return served

    def runtime(self, name: str) -> ModelRuntime:
        if name not in self.model_names:
            raise unknown_model(name, self.model_names)
        rt = self.runtimes.get(name)
        if rt is None and self.load_error is not None:   # never to be ready: no Retry-After
            raise ServiceError(503, f"model {name!r} is not served: loading failed ({self.load_error}); "
                               "fix that and restart the server")
        if rt is None or not rt.ready:
            raise ServiceError(503, f"model {name!r} is still loading; retry when /v2/health/ready is 200",
                               {"Retry-After": "2"})
        return rt

    def attach_grpc(self, server, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self._grpc, self.grpc_port, self._grpc_loop = server, port, loop

    def stop_accepting(self) -> None:
        """On SIGTERM (from the signal handler, cli.run_server): the gRPC server stops taking
        calls at once, as uvicorn stops taking HTTP requests, so HTTP/2 clients go elsewhere
        (GOAWAY) instead of feeding a draining server; calls in flight get the grace period."""
        if self.grpc_port is not None:
            self._grpc_loop.call_soon_threadsafe(self.stop_grpc)

    def stop_grpc(self) -> "asyncio.Future":
        """Stop the gRPC server (once; on its loop) -> the awaitable of that stop."""
        if self._grpc_stopping is None:
            self._grpc_stopping = asyncio.ensure_future(self._grpc.stop(self.settings.graceful_shutdown_s))
        return self._grpc_stopping

    def stop(self) -> None:
        with self._lock:                # no runtime starts after this (a shutdown mid-loading)
            self._stopping = True
            started, generate = list(self._started), self.generate
        if generate is not None:        # generations first: their steps run on the runtimes
            generate.stop(timeout=self.settings.graceful_shutdown_s)
        for rt in started:
            rt.stop(timeout=self.settings.graceful_shutdown_s)
        if self.compute is not None:
            self.compute.shutdown()


def _error(request: Request, status: int, message: str, headers: Optional[dict] = None,
           code: Optional[str] = None, param: Optional[str] = None) -> JSONResponse:
    body = error_body(status, message, openai=is_openai_path(request.url.path), code=code, param=param)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def _known(request: Request, exc: Exception):
        status, message, headers = error_response(exc)
        return _error(request, status, message, headers, getattr(exc, "code", None), openai_param(exc))

    for cls in (ServiceError, ValueError, QueueFull, BatcherStopped, asyncio.TimeoutError):
        app.add_exception_handler(cls, _known)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = [validation_message(exc.errors())]
        content_type = request.headers.get("content-type", "")
        sent_as = f"the body was sent as {content_type or 'no Content-Type'!r}"
        if request.url.path.rstrip("/") == "/v1/classify" and "multipart" not in content_type:
            parts.append(f"{sent_as}; send the image as the multipart/form-data field 'file' "
                         "(curl -F file=@image.jpg)")   # a raw image body read as 'file missing'
        elif request.url.path.rstrip("/") == "/v1/classify" and any(
                e.get("loc") == ("body", "file") and e.get("type") == "value_error" for e in exc.errors()):
            parts = ["file: expected an uploaded image, got a text field; send the file itself "
                     "(curl -F file=@image.jpg, with the @)"]   # not "Expected UploadFile, received: <class 'str'>"
        elif any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors()) and "json" not in content_type \
                and "multipart" not in content_type:   # e.g. `curl -d` without -H: form-encoded
            parts.append(f"{sent_as}; send JSON with 'Content-Type: application/json'")
        if is_openai_path(request.url.path):   # OpenAI's and vLLM's 400 (the client's BadRequestError), naming the field
            return _error(request, 400, "invalid request: " + "; ".join(parts), param=error_param(exc.errors()))
        return _error(request, 422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(request, *http_error(exc, request.method))   # e.g. invalid UTF-8: which byte, not a bare 400

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s (request %s)", request.url.path,
                      request.scope.get("state", {}).get("request_id"))
        return _error(request, 500, f"internal error: {type(exc).__name__}")


def _openapi(app: FastAPI, model_names: tuple[str, ...]):
    """/infer, the repository and the generate routes read their raw bodies (JSON or binary;
    Triton's may be empty or not labelled JSON), so their schemas are added here by hand; the {model} path parameter lists the
    served models (clients and fuzzers reach real models)."""
    def build():
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for body in (InferRequest, RepositoryIndexRequest, RepositoryModelRequest, TritonGenerateRequest):
            body_schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body_schema.pop("$defs", {}))
            components[body.__name__] = body_schema
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                for param in op.get("parameters", []):
                    if param.get("name") == "model" and param.get("in") == "path":
                        param["schema"] = {"type": "string", "enum": list(model_names)}
        app.openapi_schema = schema
        return schema
    return build


def create_app(settings: Optional[Settings] = None, models: Optional[dict] = None, hooks=None) -> FastAPI:
    """models: {name: ServedModel} to serve instead of building from settings (tests);
    hooks: models' use_impl/count_launches/depthwise_timer (default: the real ones)."""
    from .routes_openai import router as openai
    from .routes_tokenize import router as tokenize
    from .routes_v1 import router as v1
    from .routes_v2 import router as v2
    from .routes_v2_generate import router as v2_generate

    settings = settings or Settings()
    service = Service(settings, models, hooks)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.grpc_port is not None:   # OIP v2 over gRPC on this loop, beside REST
            from .grpc_server import start_grpc_server
            server, port = await start_grpc_server(service)
            service.attach_grpc(server, port, asyncio.get_running_loop())
        threading.Thread(target=service.load, name="dwserve-loader", daemon=True).start()
        yield
        if service.grpc_port is not None:   # already stopping since SIGTERM; wait for its calls
            await service.stop_grpc()
        await asyncio.to_thread(service.stop)  # drain: accepted requests finish first

    app = FastAPI(title="dwserve", version=__version__, lifespan=lifespan,
                  description="Depthwise-convolution models over the Open Inference Protocol (KServe v2).")
    app.state.service = service
    install_error_handlers(app)
    app.include_router(v2)
    app.include_router(v2_generate)
    app.include_router(v1)
    app.include_router(openai)
    app.include_router(tokenize)   # vLLM's /tokenize and /detokenize
    app.add_middleware(GuardMiddleware, service=service)
    # added last, so outside the guard: it also compresses the /infer replies the guard
    # answers itself, and the guard's access log and metrics see the status as sent
    app.add_middleware(CompressionMiddleware, min_bytes=settings.response_compression_min_bytes,
                       level=settings.response_compression_level)

    @app.get("/metrics", include_in_schema=False)
    def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    app.openapi = _openapi(app, service.model_names)
    return app
