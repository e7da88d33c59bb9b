"""Open Inference Protocol v2 (KServe v2 REST) routes. Thin: look up the model, hand the raw
body to its TensorHandler (decode -> predict -> encode), return bytes."""
from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from . import __version__
from .errors import ServiceError, unknown_model, validation_message
from .infer import check_version, infer_bytes
from .schemas import (ErrorResponse, InferResponse, LiveResponse, ModelMetadata, ReadyResponse,
                      RepositoryIndexRequest, RepositoryModel, RepositoryModelRequest, ServerMetadata)
from .triton_ext import (EXTENSIONS, SHARED_MEMORY, UNSERVED, metadata_of, model_config, model_stats,
                         repository_index, repository_load, repository_unload)

router = APIRouter(prefix="/v2", tags=["v2"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)}


def _service(request: Request):
    return request.app.state.service


@router.get("", response_model=ServerMetadata)
def server_metadata():
    return {"name": "dwserve", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", response_model=LiveResponse)
def live():
    return {"live": True}


@router.get("/health/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
def ready(request: Request):
    ok = _service(request).ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/stats", tags=["triton extensions"], responses=_ERRORS)
def all_model_stats(request: Request):
    """Triton's statistics extension: every loaded model's cumulative inference statistics."""
    return model_stats(_service(request), None)


@router.get("/models/{model}/stats", tags=["triton extensions"], responses=_ERRORS)
@router.get("/models/{model}/versions/{version}/stats", responses=_ERRORS, include_in_schema=False)
def one_model_stats(model: str, request: Request, version: str | None = None):
    """Triton's statistics extension: requests, queue and compute time, batches (service/statistics.py)."""
    check_version(version)
    return model_stats(_service(request), model)


@router.get("/models/{model}/config", tags=["triton extensions"], responses=_ERRORS)
@router.get("/models/{model}/versions/{version}/config", responses=_ERRORS, include_in_schema=False)
def one_model_config(model: str, request: Request, version: str | None = None):
    """Triton's model-configuration extension: the model's tensors, batch limit and batching delay."""
    check_version(version)
    return model_config(model, _service(request).runtime(model))


async def json_body(request: Request, schema, what: str, required: bool = True):
    """The body as `schema`, read as JSON whatever its Content-Type (Triton's clients send none,
    or form-encoded with a bare `curl -d`); not required: an empty body means the defaults.
    Raises ValueError (a 400) naming the fields."""
    raw = await request.body()
    if not required and not raw.strip():
        return schema()
    try:
        try:
            return schema.model_validate_json(raw)
        except ValidationError as exc:
            if exc.errors()[0]["type"] != "json_invalid":
                raise
            # pydantic's JSON parser refuses a lone UTF-16 surrogate escape ("\ud800") as invalid
            # JSON; Python's takes it, so the field's own check (schema_types.Text) names it, as
            # on the routes FastAPI parses. Still not JSON: the parser's message.
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):   # RecursionError: nested past the stdlib parser's depth
                raise exc from None
            return schema.model_validate(value)
    except ValidationError as exc:
        raise ValueError(f"invalid {what}: {validation_message(exc.errors())}") from None


def body_doc(schema, required: bool = True) -> dict:
    """openapi_extra for a route that reads its body itself (the app adds the schema)."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}}}}


@router.post("/repository/index", response_model=list[RepositoryModel], tags=["triton extensions"],
             responses=_ERRORS, openapi_extra=body_doc(RepositoryIndexRequest, required=False))
async def repository_models(request: Request):
    """Triton's model-repository extension: every served model, its version and state
    (READY, LOADING or UNAVAILABLE with the reason); `{"ready": true}` lists the ready ones."""
    body = await json_body(request, RepositoryIndexRequest, "repository index request", required=False)
    return repository_index(_service(request), ready_only=body.ready)


@router.post("/repository/models/{model}/load", tags=["triton extensions"], responses=_ERRORS,
             openapi_extra=body_doc(RepositoryModelRequest, required=False))
async def repository_model_load(model: str, request: Request):
    """The models are fixed at start: loading a served model succeeds once it is ready (503
    while it loads); a config or file override is a 400."""
    body = await json_body(request, RepositoryModelRequest, "repository request", required=False)
    repository_load(_service(request), model, body.parameters or {})
    return {}


@router.post("/repository/models/{model}/unload", tags=["triton extensions"], responses=_ERRORS,
             openapi_extra=body_doc(RepositoryModelRequest, required=False))
async def repository_model_unload(model: str, request: Request):
    """The models are fixed at start: unloading is a 400 saying so."""
    await json_body(request, RepositoryModelRequest, "repository request", required=False)
    repository_unload(_service(request), model)


@router.get("/models/{model}", response_model=ModelMetadata, responses=_ERRORS)
@router.get("/models/{model}/versions/{version}", response_model=ModelMetadata, responses=_ERRORS,
            include_in_schema=False)
def model_metadata(model: str, request: Request, version: str | None = None):
    check_version(version)
    return metadata_of(model, _service(request).runtime(model))


@router.get("/models/{model}/ready", response_model=ReadyResponse, responses=_ERRORS)
@router.get("/models/{model}/versions/{version}/ready", response_model=ReadyResponse, responses=_ERRORS,
            include_in_schema=False)
def model_ready(model: str, request: Request, version: str | None = None):
    check_version(version)
    svc = _service(request)
    if model not in svc.model_names:
        raise unknown_model(model, svc.model_names)
    rt = svc.runtimes.get(model)
    ok = rt is not None and rt.ready
    return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)


@router.post("/models/{model}/infer", response_model=InferResponse, responses=_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}}})
@router.post("/models/{model}/versions/{version}/infer", response_model=InferResponse, responses=_ERRORS,
             include_in_schema=False)
async def infer(model: str, request: Request, version: str | None = None):
    # Served by GuardMiddleware's direct path (service/infer.py); this route gives the
    # schema and runs the same function if the router is mounted without the middleware.
    headers = {k.lower(): v for k, v in request.headers.items()}
    content, out_headers = await infer_bytes(_service(request), model, version, headers,
                                             await request.body(), request.scope.setdefault("state", {}))
    return Response(content, headers=out_headers)


def _unserved(message: str):
    def refuse():
        raise ServiceError(400, message)
    return refuse


# Triton's shared-memory, trace and logging endpoints (tritonclient's *_shared_memory*,
# *_trace_settings, *_log_settings): each answers why it is unserved (service/triton_ext.py).
for _kind in ("system", "cuda"):
    router.api_route(f"/{_kind}sharedmemory/{{rest:path}}", methods=["GET", "POST"], responses=_ERRORS,
                     include_in_schema=False)(_unserved(SHARED_MEMORY.format(kind=_kind.capitalize())))
for _path in ("/trace/setting", "/models/{model}/trace/setting", "/models/{model}/versions/{version}/trace/setting"):
    router.api_route(_path, methods=["GET", "POST"], responses=_ERRORS, include_in_schema=False)(_unserved(UNSERVED["trace"]))
router.api_route("/logging", methods=["GET", "POST"], responses=_ERRORS,
                 include_in_schema=False)(_unserved(UNSERVED["logging"]))
