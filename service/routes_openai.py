"""OpenAI-compatible routes over the /v1/generate handler: `POST /v1/completions` and
`POST /v1/chat/completions` (JSON or SSE chunks ending in `data: [DONE]`; a chat goes through
the model's chat template), `GET /v1/models` and `GET /v1/models/{model}`. Same limits,
validation, continuous batching and metrics as /v1/generate (schemas_openai.py maps the request).

`n` choices are n sequences of the continuous batch, admitted all or none and submitted
together (one prefill group when rows are free), each with its own sampler: seed + i for
choice i when a seed is given.
Streamed, their chunks interleave as tokens come, each naming its choice `index`.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid

from fastapi import APIRouter, Request
from pydantic import ValidationError

from .errors import ServiceError
from .handlers.generate import sendable
from .routes_v1 import ERROR_RESPONSES, close_streams, final_events, first_events, handler_of, sse_response
from .schemas_openai import (ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
                             CompletionResponse, ModelCard, ModelList)

router = APIRouter(prefix="/v1", tags=["openai"])


def _choice(index: int, text: str, finish_reason, logprobs=None) -> dict:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def _token(tokenizer, token_id: int) -> tuple[str, bytes]:
    """A token's name in logprobs and its raw UTF-8 bytes. A part of a character (a byte-level
    token) is named as OpenAI names it, `bytes:\\xe2\\x80`: decoded alone, every such part is
    U+FFFD, so top_logprobs (keyed by name) lost alternatives and `bytes` said [239, 191, 189]."""
    token_bytes = getattr(tokenizer, "token_bytes", None)
    raw = token_bytes(token_id) if token_bytes is not None else tokenizer.decode([token_id]).encode("utf-8")
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw), raw


class _Covered:
    """The logprob entries a choice's reply carries: a token's once its text starts inside the
    text sent. The tokens that spelled a stop string (cut from the text; usage counts them)
    get none. Streamed, an entry waits for its token's text: the handler's events carry
    entries ahead of the text it holds back."""

    def __init__(self, tokenizer):
        self.tok, self.ids, self.pending, self.sent = tokenizer, [], [], 0

    def take(self, entries: list[dict], text: str) -> list[dict]:
        for e in entries:   # a token starts where the text before it ends (less a partial character)
            self.pending.append((sendable(self.tok.decode(self.ids), 0), e))
            self.ids.append(e["token_id"])
        self.sent += len(text)
        n = next((k for k, (start, _) in enumerate(self.pending) if start >= self.sent), len(self.pending))
        out, self.pending = [e for _, e in self.pending[:n]], self.pending[n:]
        return out

    def rest(self, final: dict) -> list[dict]:   # at the end: tokens without text, unless cut off
        out, self.pending = [e for _, e in self.pending], []
        return out if self.tok.decode(final["token_ids"]) == final["text"] else []

    @classmethod
    def of(cls, tokenizer, final: dict) -> list[dict]:   # a JSON reply's
        return (cover := cls(tokenizer)).take(final["logprobs"], final["text"]) + cover.rest(final)


def _completion_logprobs(tokenizer, lps: list[dict], top: int, offset: int = 0) -> dict:
    """The legacy completions shape of logprob entries (a reply's, or a chunk's): token
    names, their logprobs, top alternatives as {name: logprob}, and each token's offset in
    the completion text (its decoded length; the chunk's tokens start at `offset`). An echoed
    prompt's first token has no logprob and no alternatives (None)."""
    ids = [t["token_id"] for t in lps]
    return {"tokens": [_token(tokenizer, i)[0] for i in ids], "token_logprobs": [t["logprob"] for t in lps],
            "top_logprobs": [None if t["top"] is None else
                             {_token(tokenizer, x["token_id"])[0]: x["logprob"] for x in t["top"]} for t in lps]
            if top else None,
            "text_offset": list(itertools.accumulate((len(tokenizer.decode([i])) for i in ids), initial=offset))[:-1]}


def _score(lm, ids: list[int], top: int, impl: str) -> list[dict]:
    """On the compute thread: the prompt's entries for echo, in the shape of generated ones."""
    from models.depthwise import use_impl
    from models.lfm2.scoring import prompt_logprobs
    with use_impl(impl):
        scored = prompt_logprobs(lm, ids, top)
    return [{"token_id": ids[0], "logprob": None, "top": None}] + [
        {"token_id": t, "logprob": lp, "top": [{"token_id": i, "logprob": v} for i, v in alts]}
        for t, (lp, alts) in zip(ids[1:], scored)]


async def _echo(handler, body, plan) -> dict:
    """What `echo` puts before every choice: the prompt's text (as sent, or its ids decoded)
    and, with logprobs, its tokens' log-probabilities given the tokens before them."""
    prompt = body.single_prompt
    text = prompt if isinstance(prompt, str) else \
        handler.tokenizer.decode(plan.ids) if handler.tokenizer is not None else ""
    entries = None
    if body.logprobs is not None:
        entries = await asyncio.to_thread(handler.rt.on_compute, _score, handler.lm, plan.ids, body.logprobs,
                                          plan.impl)
    return {"echo": True, "text": text, "logprobs": entries}


async def _prefixed(first: dict, events):
    """A choice's events with `first` (already taken from them) put back in front."""
    yield first
    async for event in events:
        yield event


async def _nothing(plan):
    """The events of a choice that generates nothing (max_tokens 0: the echo is all)."""
    yield {"done": True, "text": "", "token_ids": [], "finish_reason": "length",
           "logprobs": [] if plan.logprobs is not None else None,
           "usage": {"prompt_tokens": len(plan.ids), "completion_tokens": 0, "cached_tokens": 0}}


def _chat_logprobs(tokenizer, lps: list[dict]) -> dict:
    """The chat shape of logprob entries: per token its name, logprob, raw UTF-8 bytes (joined,
    a character split over tokens is whole again) and top alternatives."""
    def entry(token_id: int, logprob: float) -> dict:
        name, raw = _token(tokenizer, token_id)
        return {"token": name, "logprob": logprob, "bytes": list(raw)}
    return {"content": [{**entry(t["token_id"], t["logprob"]),
                         "top_logprobs": [entry(x["token_id"], x["logprob"]) for x in t["top"]]}
                        for t in lps]}


def _usage(finals: list[dict]) -> dict:
    prompt = finals[0]["usage"]["prompt_tokens"]          # one prompt for every choice
    completion = sum(f["usage"]["completion_tokens"] for f in finals)
    cached = max(f["usage"].get("cached_tokens", 0) for f in finals)   # restored, not prefilled
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


@router.get("/models", response_model=ModelList)
async def models(request: Request):
    svc = request.app.state.service
    return {"object": "list", "data": [{"id": svc.generate_model}] if svc.generate_model else []}


@router.get("/models/{model}", response_model=ModelCard, responses=ERROR_RESPONSES)
async def model(model: str, request: Request):
    """One model's card (the openai client's `models.retrieve`); a name not listed is a 404."""
    served = request.app.state.service.generate_model
    if model != served:
        raise ServiceError(404, f"model {model!r}: this server completes with {served!r} (GET /v1/models)"
                           if served else f"model {model!r}: this server serves no language model")
    return {"id": served}


async def _start(request: Request, body, make_request, generate: bool = True):
    """The shared front of both routes: model check, limits, unsupported fields (400 naming
    them), one /v1/generate plan per choice, and every choice's first event (QueueFull /
    timeouts surface here, before any byte is sent). make_request(handler) -> GenerateRequest.
    generate False: the plans are checked but nothing is generated (each choice's events are
    a final with no tokens). -> (the generate handler, plans, [event stream per choice], [its
    first event])."""
    handler = handler_of(request, "generate")
    name, settings = handler.rt.name, handler.rt.settings
    if body.model is not None and body.model != name:
        raise ServiceError(404, f"model {body.model!r}: this server completes with {name!r} (GET /v1/models)")
    if body.n > settings.max_choices:
        raise ValueError(f"n: at most {settings.max_choices} choices per request (DWSERVE_MAX_CHOICES), got {body.n}")
    bad = body.unsupported()
    if bad:
        raise ValueError(f"unsupported: {', '.join(bad)}; dwserve returns text choices, without suffix, "
                         "best_of, tools or response formats")
    if getattr(body, "logprobs", None) not in (None, False) and handler.tokenizer is None:
        raise ValueError(f"logprobs: model {handler.rt.name!r} has no tokenizer to name tokens with; "
                         "/v1/generate reports logprobs by token id")
    try:
        base = make_request(handler)
        plans = [handler.decode(base if i == 0 or base.seed is None else
                                base.model_copy(update={"seed": (base.seed + i) % 2**63}))
                 for i in range(body.n)]
    except ValidationError as exc:
        raise ValueError(f"invalid request: {exc.errors()[0].get('msg')}") from None
    request.state.dw_impl = plans[0].impl
    # The n choices are admitted all or none (a 503 or, if n can never fit, a 400), so a
    # request never holds some rows while its other choices are refused.
    room = handler.scheduler.reserved(len(plans), plans[0].impl) if generate else contextlib.nullcontext()
    with room:
        streams = [handler.events(plan) if generate else _nothing(plan) for plan in plans]
        firsts = await first_events(request, streams)
    return handler, plans, streams, firsts


@router.post("/completions", response_model=CompletionResponse, responses=ERROR_RESPONSES)
async def completions(body: CompletionRequest, request: Request):
    handler, plans, streams, firsts = await _start(request, body, lambda handler: body.to_generate(),
                                                   generate=not body.scores_only)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": handler.rt.name}
    try:
        echo = await _echo(handler, body, plans[0]) if body.echo else None
    except BaseException:    # the choices are already generating: free their rows
        await close_streams(streams)
        raise

    def logprobs_of(entries, offset=0):
        return None if body.logprobs is None else \
            _completion_logprobs(handler.tokenizer, entries, body.logprobs, offset)

    if not body.stream:
        finals = await final_events(request, streams, firsts)
        lead_text, lead = (echo["text"], echo["logprobs"] or []) if echo else ("", [])
        return {**head, "choices": [_choice(i, lead_text + f["text"], f["finish_reason"],
                                            logprobs_of(lead + _Covered.of(handler.tokenizer, f))
                                            if body.logprobs is not None else None)
                                    for i, f in enumerate(finals)], "usage": _usage(finals)}
    offsets = [0] * body.n   # per choice: where its next token's text starts
    covers = [_Covered(handler.tokenizer) for _ in range(body.n)]
    if echo:                 # each choice's stream opens with the prompt
        firsts, streams = [echo] * body.n, [_prefixed(f, s) for f, s in zip(firsts, streams)]

    def chunk_logprobs(i: int, entries) -> dict:
        logprobs = logprobs_of(entries, offsets[i])
        offsets[i] += sum(len(handler.tokenizer.decode([t["token_id"]])) for t in entries)
        return logprobs

    def token_chunk(i: int, event: dict) -> dict:
        logprobs = None
        if body.logprobs is not None:
            entries = event["logprobs"] if event.get("echo") else covers[i].take(event["logprobs"], event["text"])
            logprobs = chunk_logprobs(i, entries or [])
        return {**head, "choices": [_choice(i, event["text"], None, logprobs)]}

    def finish_chunk(i: int, final: dict) -> dict:
        rest = covers[i].rest(final) if body.logprobs is not None else []
        return {**head, "choices": [_choice(i, "", final["finish_reason"], chunk_logprobs(i, rest) if rest else None)]}

    return sse_response(
        streams, firsts, token_chunk, finish_chunk,
        lambda finals: [{**head, "choices": [], "usage": _usage(finals)}] if body.include_usage else [])


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
    return body.to_generate(ids, max(1, min(settings.max_new_tokens, handler.max_length - len(ids))))


def _chat_chunk(head: dict, index: int, delta: dict, finish_reason=None) -> dict:
    return {**head, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=ERROR_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    handler, _, streams, firsts = await _start(request, body, lambda handler: _chat_prompt(body, handler))
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": handler.rt.name}
    if not body.stream:
        finals = await final_events(request, streams, firsts)
        choices = [{"index": i, "message": {"role": "assistant", "content": f["text"]},
                    "logprobs": _chat_logprobs(handler.tokenizer, _Covered.of(handler.tokenizer, f))
                    if body.logprobs else None,
                    "finish_reason": f["finish_reason"]} for i, f in enumerate(finals)]
        return {**head, "choices": choices, "usage": _usage(finals)}
    head["object"] = "chat.completion.chunk"
    opened: set[int] = set()   # a choice's first chunk carries the role, as OpenAI's do

    def delta(i: int, text: str) -> dict:
        if i in opened:
            return {"content": text}
        opened.add(i)
        return {"role": "assistant", "content": text}

    covers = [_Covered(handler.tokenizer) for _ in range(body.n)]

    def token_chunk(i: int, event: dict) -> dict:
        chunk = _chat_chunk(head, i, delta(i, event["text"]))
        if body.logprobs:
            entries = covers[i].take(event["logprobs"], event["text"])
            chunk["choices"][0]["logprobs"] = _chat_logprobs(handler.tokenizer, entries)
        return chunk

    def finish_chunk(i: int, final: dict) -> dict:
        chunk = _chat_chunk(head, i, {} if i in opened else delta(i, ""), final["finish_reason"])
        rest = covers[i].rest(final) if body.logprobs else []
        if rest:
            chunk["choices"][0]["logprobs"] = _chat_logprobs(handler.tokenizer, rest)
        return chunk

    return sse_response(
        streams, firsts, token_chunk, finish_chunk,
        lambda finals: [{**head, "choices": [], "usage": _usage(finals)}] if body.include_usage else [])
