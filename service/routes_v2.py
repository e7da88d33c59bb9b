"""Open Inference Protocol v2 (KServe v2 REST) routes. Thin: look up the model, hand the raw
body to its TensorHandler (decode -> predict -> encode), return bytes."""
from __future__ import annotations

import asyncio
import zlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import __version__
from .errors import ServiceError
from .schemas import (ErrorResponse, InferResponse, LiveResponse, ModelMetadata, ReadyResponse,
                      ServerMetadata)

router = APIRouter(prefix="/v2", tags=["v2"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503)}
# Content types accepted on /infer: tritonclient sends none or octet-stream (binary extension);
# `curl -d` sends form-urlencoded, which is read as the JSON it almost always is.
_INFER_TYPES = ("", "application/json", "application/octet-stream", "application/x-www-form-urlencoded")


def _service(request: Request):
    return request.app.state.service


def _check_version(version: str | None) -> None:
    if version is not None and version != "1":
        raise ServiceError(404, f"unknown model version {version!r}; expected '1'")


@router.get("", response_model=ServerMetadata)
def server_metadata():
    return {"name": "dwserve", "version": __version__, "extensions": ["binary_tensor_data", "parameters"]}


@router.get("/health/live", response_model=LiveResponse)
def live():
    return {"live": True}


@router.get("/health/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
def ready(request: Request):
    ok = _service(request).ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{model}", response_model=ModelMetadata, responses=_ERRORS)
@router.get("/models/{model}/versions/{version}", response_model=ModelMetadata, responses=_ERRORS,
            include_in_schema=False)
def model_metadata(model: str, request: Request, version: str | None = None):
    _check_version(version)
    rt = _service(request).runtime(model)
    spec = lambda s: {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}  # noqa: E731
    served = rt.served
    meta = {k: v for k, v in (getattr(served, "metadata", None) or {}).items() if isinstance(v, (int, float, str, bool))}
    return {"name": model, "versions": ["1"], "platform": "pytorch",
            "inputs": [spec(s) for s in served.inputs], "outputs": [spec(s) for s in served.outputs],
            "parameters": {**meta, "depthwise_impl": rt.settings.depthwise_impl,
                           "max_batch_size": rt.settings.max_batch_size}}


@router.get("/models/{model}/ready", response_model=ReadyResponse, responses=_ERRORS)
@router.get("/models/{model}/versions/{version}/ready", response_model=ReadyResponse, responses=_ERRORS,
            include_in_schema=False)
def model_ready(model: str, request: Request, version: str | None = None):
    _check_version(version)
    svc = _service(request)
    if model not in svc.model_names:
        raise ServiceError(404, f"unknown model {model!r}; expected one of {list(svc.model_names)}")
    rt = svc.runtimes.get(model)
    ok = rt is not None and rt.ready
    return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """tritonclient's request_compression_algorithm; bounded so a zip bomb is a 413."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ServiceError(415, f"Content-Encoding {encoding!r} unsupported; expected gzip, deflate or none")
    d = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"body: invalid {encoding} data ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ServiceError(413, f"decompressed body exceeds the limit of {limit} bytes (DWSERVE_MAX_BODY_BYTES)")
    return out


@router.post("/models/{model}/infer", response_model=InferResponse, responses=_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}}}})
@router.post("/models/{model}/versions/{version}/infer", response_model=InferResponse, responses=_ERRORS,
             include_in_schema=False)
async def infer(model: str, request: Request, version: str | None = None):
    _check_version(version)
    svc = _service(request)
    rt = svc.runtime(model)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _INFER_TYPES:
        raise ServiceError(415, f"Content-Type {ctype!r} unsupported; expected application/json, or "
                                "application/octet-stream with Inference-Header-Content-Length")
    body = _decompress(await request.body(), request.headers.get("content-encoding", "").lower(),
                       svc.settings.max_body_bytes)
    handler = svc.tensor[model]
    header_length = request.headers.get("inference-header-content-length")
    if len(body) > 65536 and header_length is None:  # big JSON: parse off the event loop
        decoded = await asyncio.to_thread(handler.decode, body, header_length)
    else:
        decoded = handler.decode(body, header_length)
    request.state.dw_impl = decoded.impl
    outputs = await handler.predict(decoded)
    content, headers = handler.encode(decoded, outputs)
    return Response(content, headers=headers)
