"""What the OpenAI-compatible routes share (routes_openai_completions.py, routes_openai_chat.py):
the request's front (model check, limits, unsupported fields, one /v1/generate plan per choice,
admission all or none), the logprob entries a reply carries, token names and usage.

`n` choices are n sequences of the continuous batch, admitted all or none and submitted
together (one prefill group when rows are free), each with its own sampler: seed + i for
choice i when a seed is given.
"""
from __future__ import annotations

import asyncio
import contextlib

from fastapi import Request
from pydantic import ValidationError

from .errors import FieldError, model_not_found
from .handlers.generate import given_fields
from .handlers.text_output import sendable
from .routes_v1 import first_events, handler_of


def token_name(tokenizer, token_id: int) -> tuple[str, bytes]:
    """A token's name in logprobs and its raw UTF-8 bytes. A part of a character (a byte-level
    token) is named as OpenAI names it, `bytes:\\xe2\\x80`: decoded alone, every such part is
    U+FFFD, so top_logprobs (keyed by name) lost alternatives and `bytes` said [239, 191, 189].
    A special token (eos, bos, ...) has no text: it is named as its tokenizer names it,
    `<|im_end|>` (vLLM's names), or `token_id:N` (vLLM's spelling by id) by a tokenizer that
    names none; "" named them all alike. Its bytes stay empty: joined, bytes give the text."""
    token_bytes = getattr(tokenizer, "token_bytes", None)
    raw = token_bytes(token_id) if token_bytes is not None else tokenizer.decode([token_id]).encode("utf-8")
    if not raw:
        special = getattr(tokenizer, "special_token_name", None)
        return (special(token_id) if special is not None else "") or f"token_id:{token_id}", raw
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw), raw


class Covered:
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


def usage(finals: list[dict], n: int = 1) -> dict:
    """The reply's usage over its choices, n per prompt (prompt i's at i*n .. i*n+n-1): each
    prompt's tokens counted once, as its cached tokens (restored, not prefilled), however many
    choices it has; every choice's completion tokens."""
    groups = [finals[i:i + n] for i in range(0, len(finals), n)]
    prompt = sum(group[0]["usage"]["prompt_tokens"] for group in groups)
    completion = sum(f["usage"]["completion_tokens"] for f in finals)
    cached = sum(max(f["usage"].get("cached_tokens", 0) for f in group) for group in groups)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def with_usage(chunk: dict, body, plan, completion_tokens: int) -> dict:
    """A streamed chunk of `plan`'s choice with its usage so far, when the request asked for it
    (vLLM's continuous_usage_stats)."""
    if body.continuous_usage:
        prompt = len(plan.ids)
        chunk["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                          "total_tokens": prompt + completion_tokens}
    return chunk


async def _nothing(plan):
    """The events of a choice that generates nothing (max_tokens 0: the echo is all)."""
    yield {"done": True, "text": "", "token_ids": [], "finish_reason": "length",
           "logprobs": [] if plan.logprobs is not None else None,
           "usage": {"prompt_tokens": len(plan.ids), "completion_tokens": 0, "cached_tokens": 0}}


async def start(request: Request, body, make_requests, generate: bool = True):
    """The shared front of both routes: model check, limits, unsupported fields (400 naming
    them), one /v1/generate plan per choice, and every choice's first event (QueueFull /
    timeouts surface here, before any byte is sent). make_requests(handler) -> a
    GenerateRequest per prompt (chat: one; completions: one per prompt of a batch); each
    gets body.n choices, prompt i's at i*n .. i*n+n-1. generate False: the plans are checked
    but nothing is generated (each choice's events are a final with no tokens). -> (the
    generate handler, plans, [event stream per choice], [its first event])."""
    handler = handler_of(request, "generate")
    name, settings = handler.rt.name, handler.rt.settings
    if body.model is not None and body.model != name:
        raise model_not_found(body.model, name)
    if body.n > settings.max_choices:
        raise ValueError(f"n: at most {settings.max_choices} choices per request (DWSERVE_MAX_CHOICES), got {body.n}")
    bad = body.unsupported()
    if bad:
        message = f"unsupported: {', '.join(bad)}; dwserve returns text choices, without suffix, best_of or tools"
        # one field at fault: OpenAI's `param` names it ("suffix", "max_tokens" of "max_tokens 0 without echo")
        raise FieldError(bad[0].split()[0], message) if len(bad) == 1 else ValueError(message)
    asked = getattr(body, "logprobs", None)   # completions: an int (0 asks too), chat: a bool
    if asked is not None and asked is not False and handler.tokenizer is None:
        raise ValueError(f"logprobs: model {handler.rt.name!r} has no tokenizer to name tokens with; "
                         "/v1/generate reports logprobs by token id")

    def plan_all():
        bases = make_requests(handler)
        compiled: dict = {}   # structured outputs: the request's constraint, compiled once for all its plans
        return bases, [_plan(handler, body, base, i, compiled, where=f"prompt[{p}]: " if len(bases) > 1 else "")
                       for p, base in enumerate(bases) for i in range(body.n)]
    try:
        # A structured output's grammar is compiled in a worker thread (a large schema ~0.1 s, a
        # tokenizer's first ~1 s), not on the event loop every other request streams from.
        bases, plans = await asyncio.to_thread(plan_all) if body.constrained else plan_all()
    except ValidationError as exc:
        raise ValueError(f"invalid request: {exc.errors()[0].get('msg')}") from None
    request.state.dw_impl = plans[0].impl
    # The choices are admitted all or none (a 503 or, if they can never fit, a 400), so a
    # request never holds some rows while its other choices are refused.
    asked_for = "n" if len(bases) == 1 else f"prompt ({len(bases)} prompts) x n ({body.n})"
    room = handler.scheduler.reserved(len(plans), plans[0].impl, asked_for) if generate else contextlib.nullcontext()
    with room:
        streams = [handler.events(plan) if generate else _nothing(plan) for plan in plans]
        firsts = await first_events(request, streams)
    return handler, plans, streams, firsts


def _plan(handler, body, base, choice: int, compiled: dict, where: str = ""):
    """Choice `choice` of one prompt: its own sampler, seed + choice when a seed is given (so a
    prompt of a batch gets what it gets alone). A refusal names the prompt (`where`) of a batch."""
    request = base if choice == 0 or base.seed is None else \
        base.model_copy(update={"seed": (base.seed + choice) % 2**63})
    try:
        return handler.decode(request, body.max_tokens_name,
                              default_new_tokens=16,   # OpenAI's completions default (chat's is explicit)
                              client_set=given_fields(body), compiled=compiled,
                              generates=not getattr(body, "scores_only", False),   # echo, max_tokens 0
                              prompt_name="messages" if hasattr(body, "messages") else "prompt")
    except ValidationError:
        raise
    except ValueError as exc:
        if not where:
            raise
        param = getattr(exc, "param", None)   # a FieldError keeps its field
        # one about the prompt itself names it once: "prompt[1]: token ids must be in ..."
        message = where + (str(exc).removeprefix("prompt: ") if param == "prompt" else str(exc))
        raise (FieldError(param, message) if param else ValueError(message)) from None
