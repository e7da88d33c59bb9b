"""OpenAI-compatible routes over the /v1/generate handler: `POST /v1/completions` (one choice,
JSON or SSE chunks ending in `data: [DONE]`) and `GET /v1/models`. Same limits, validation,
continuous batching and metrics as /v1/generate (schemas_openai.py maps the request)."""
from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from pydantic import ValidationError

from .errors import ServiceError
from .routes_v1 import _ERRORS, _handler, sse_response
from .schemas_openai import CompletionRequest, CompletionResponse, ModelList

router = APIRouter(prefix="/v1", tags=["openai"])


def _choice(text: str, finish_reason) -> dict:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _usage(final: dict) -> dict:
    u = final["usage"]
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["prompt_tokens"] + u["completion_tokens"]}


@router.get("/models", response_model=ModelList)
async def models(request: Request):
    svc = request.app.state.service
    return {"object": "list", "data": [{"id": svc.generate_model}] if svc.generate_model else []}


@router.post("/completions", response_model=CompletionResponse, responses=_ERRORS)
async def completions(body: CompletionRequest, request: Request):
    handler = _handler(request, "generate")
    name = handler.rt.name
    if body.model is not None and body.model != name:
        raise ServiceError(404, f"model {body.model!r}: this server completes with {name!r} (GET /v1/models)")
    bad = body.unsupported()
    if bad:
        raise ValueError(f"unsupported: {', '.join(bad)}; dwserve returns one choice, without logprobs, "
                         "echo, suffix, penalties or logit_bias")
    try:
        plan = handler.decode(body.to_generate())
    except ValidationError as exc:
        raise ValueError(f"invalid request: {exc.errors()[0].get('msg')}") from None
    request.state.dw_impl = plan.impl
    events = handler.events(plan)
    first = await events.__anext__()      # QueueFull / timeouts surface here, before any byte is sent
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": name}
    if not body.stream:
        final = first
        async for final in events:
            pass
        return {**head, "choices": [_choice(final["text"], final["finish_reason"])], "usage": _usage(final)}
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def final_events(final: dict) -> list[dict]:
        out = [{**head, "choices": [_choice("", final["finish_reason"])]}]
        return out + ([{**head, "choices": [], "usage": _usage(final)}] if include_usage else [])

    return sse_response(first, events, lambda event: {**head, "choices": [_choice(event["text"], None)]},
                        final_events)
