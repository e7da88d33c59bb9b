"""OpenAI-compatible routes over the /v1/generate handler: `POST /v1/completions` and
`POST /v1/chat/completions` (one choice, JSON or SSE chunks ending in `data: [DONE]`; a chat
goes through the model's chat template) and `GET /v1/models`. Same limits, validation,
continuous batching and metrics as /v1/generate (schemas_openai.py maps the request)."""
from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from pydantic import ValidationError

from .errors import ServiceError
from .routes_v1 import _ERRORS, _handler, sse_response
from .schemas_openai import (ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
                             CompletionResponse, ModelList)

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


async def _start(request: Request, body, make_request):
    """The shared front of both routes: model check, unsupported fields (400 naming them),
    the /v1/generate plan, and the first event (QueueFull / timeouts surface here, before
    any byte is sent). make_request(handler) -> GenerateRequest."""
    handler = _handler(request, "generate")
    name = handler.rt.name
    if body.model is not None and body.model != name:
        raise ServiceError(404, f"model {body.model!r}: this server completes with {name!r} (GET /v1/models)")
    bad = body.unsupported()
    if bad:
        raise ValueError(f"unsupported: {', '.join(bad)}; dwserve returns one text choice, without logprobs, "
                         "echo, suffix, penalties, logit_bias, tools or response formats")
    try:
        plan = handler.decode(make_request(handler))
    except ValidationError as exc:
        raise ValueError(f"invalid request: {exc.errors()[0].get('msg')}") from None
    request.state.dw_impl = plan.impl
    events = handler.events(plan)
    first = await events.__anext__()
    return name, events, first


async def _last(first: dict, events) -> dict:
    final = first
    async for final in events:
        pass
    return final


@router.post("/completions", response_model=CompletionResponse, responses=_ERRORS)
async def completions(body: CompletionRequest, request: Request):
    name, events, first = await _start(request, body, lambda handler: body.to_generate())
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": name}
    if not body.stream:
        final = await _last(first, events)
        return {**head, "choices": [_choice(final["text"], final["finish_reason"])], "usage": _usage(final)}

    def final_events(final: dict) -> list[dict]:
        out = [{**head, "choices": [_choice("", final["finish_reason"])]}]
        return out + ([{**head, "choices": [], "usage": _usage(final)}] if body.include_usage else [])

    return sse_response(first, events, lambda event: {**head, "choices": [_choice(event["text"], None)]},
                        final_events)


def _chat_prompt(body: ChatCompletionRequest, handler):
    """messages -> the model's chat template -> token ids, under the prompt limits."""
    messages = body.to_messages()
    chars, limit = sum(len(m["content"]) for m in messages), handler.rt.settings.max_prompt_chars
    if chars > limit:
        raise ValueError(f"messages: {chars} characters of content; the limit is {limit} (DWSERVE_MAX_PROMPT_CHARS)")
    if handler.tokenizer is None:
        raise ValueError(f"model {handler.rt.name!r} has no tokenizer (tokenizer.json); send input_ids to /v1/generate")
    ids = handler.tokenizer.apply_chat_template(messages)
    settings = handler.rt.settings   # unset max_tokens: as many as the limits leave room for
    return body.to_generate(ids, max(1, min(settings.max_new_tokens, settings.max_sequence_length - len(ids))))


def _chat_chunk(head: dict, delta: dict, finish_reason=None) -> dict:
    return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=_ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    name, events, first = await _start(request, body, lambda handler: _chat_prompt(body, handler))
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": name}
    if not body.stream:
        final = await _last(first, events)
        message = {"role": "assistant", "content": final["text"]}
        return {**head, "choices": [{"index": 0, "message": message, "logprobs": None,
                                     "finish_reason": final["finish_reason"]}], "usage": _usage(final)}
    head["object"] = "chat.completion.chunk"
    opened = []   # the first chunk carries the role, as OpenAI's do

    def token_event(event: dict) -> dict:
        delta = {"content": event["text"]} if opened else {"role": "assistant", "content": event["text"]}
        opened.append(True)
        return _chat_chunk(head, delta)

    def final_events(final: dict) -> list[dict]:
        out = [_chat_chunk(head, {} if opened else {"role": "assistant", "content": ""}, final["finish_reason"])]
        return out + ([{**head, "choices": [], "usage": _usage(final)}] if body.include_usage else [])

    return sse_response(first, events, token_event, final_events)
