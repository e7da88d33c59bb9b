"""`POST /v1/chat/completions` over the /v1/generate handler: the messages go through the
model's chat template; one JSON reply, or SSE chunks ending in `data: [DONE]`.

Streamed, each choice opens with a role chunk (`{"role": "assistant", "content": ""}`, no
logprobs), all of them in index order before any token, as OpenAI's and vLLM's streams do:
the openai client's `chat.completions.stream()` starts a choice it has not seen from its
first chunk and then adds that chunk to it again, so content or logprobs there came back
twice. Then the choices' chunks interleave as tokens come, each naming its `index`.
"""
from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from .openai_common import Covered, start, token_name, usage, with_usage
from .routes_v1 import final_events, sse_response
from .schemas_openai import ChatCompletionRequest
from .schemas_openai_replies import OPENAI_ERROR_RESPONSES, ChatCompletionResponse

router = APIRouter(prefix="/v1", tags=["openai"])


def _chat_logprobs(tokenizer, lps: list[dict]) -> dict:
    """The chat shape of logprob entries: per token its name, logprob, raw UTF-8 bytes (joined,
    a character split over tokens is whole again) and top alternatives."""
    def entry(token_id: int, logprob: float) -> dict:
        name, raw = token_name(tokenizer, token_id)
        return {"token": name, "logprob": logprob, "bytes": list(raw)}
    return {"content": [{**entry(t["token_id"], t["logprob"]),
                         "top_logprobs": [entry(x["token_id"], x["logprob"]) for x in t["top"]]}
                        for t in lps]}


def chat_prompt_ids(handler, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """messages ([{"role", "content"}]) -> the model's chat template -> token ids, under the
    prompt limits: the chat route's prompt, and /tokenize's chat form."""
    chars, limit = sum(len(m["content"]) for m in messages), handler.rt.settings.max_prompt_chars
    if chars > limit:
        raise ValueError(f"messages: {chars} characters of content; the limit is {limit} (DWSERVE_MAX_PROMPT_CHARS)")
    if handler.tokenizer is None:
        raise ValueError(f"model {handler.rt.name!r} has no tokenizer (tokenizer.json); send input_ids to /v1/generate")
    if add_generation_prompt:   # the chat route's very call
        return list(handler.tokenizer.apply_chat_template(messages))
    return list(handler.tokenizer.apply_chat_template(messages, add_generation_prompt=False))


def _chat_prompt(body: ChatCompletionRequest, handler):
    """messages -> token ids (chat_prompt_ids) -> the request, max_tokens defaulting to the room left."""
    ids = chat_prompt_ids(handler, body.to_messages())
    room = handler.max_length - len(ids)   # unset max_tokens: as many as the limits leave room for
    if room < 1 and not (body.max_tokens or body.max_completion_tokens):
        raise ValueError(f"messages: {len(ids)} tokens through the chat template leave no room for an answer "
                         f"within {handler.max_length} tokens ({handler.max_length_source}); "
                         "send fewer or shorter messages")
    return body.to_generate(ids, max(1, min(handler.rt.settings.max_new_tokens, room)))


def _chat_chunk(head: dict, index: int, delta: dict, finish_reason=None) -> dict:
    return {**head, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=OPENAI_ERROR_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    handler, plans, streams, firsts = await start(request, body, lambda handler: [_chat_prompt(body, handler)])
    tok = plans[0].tokenizer   # decodes as the request asked (skip_special_tokens)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": handler.rt.name}
    if not body.stream:
        finals = await final_events(request, streams, firsts)
        choices = [{"index": i, "message": {"role": "assistant", "content": f["text"]},
                    "logprobs": _chat_logprobs(tok, Covered.of(tok, f))
                    if body.logprobs else None,
                    "finish_reason": f["finish_reason"]} for i, f in enumerate(finals)]
        return {**head, "choices": choices, "usage": usage(finals, body.n)}
    head["object"] = "chat.completion.chunk"
    covers = [Covered(tok) for _ in range(body.n)]

    def token_chunk(i: int, event: dict) -> dict:
        chunk = _chat_chunk(head, i, {"content": event["text"]})
        if body.logprobs:
            entries = covers[i].take(event["logprobs"], event["text"])
            chunk["choices"][0]["logprobs"] = _chat_logprobs(tok, entries)
        return with_usage(chunk, body, plans[i], event["tokens"])

    def finish_chunk(i: int, final: dict) -> dict:
        chunk = _chat_chunk(head, i, {}, final["finish_reason"])
        rest = covers[i].rest(final) if body.logprobs else []
        if rest:
            chunk["choices"][0]["logprobs"] = _chat_logprobs(tok, rest)
        return with_usage(chunk, body, plans[i], final["usage"]["completion_tokens"])

    return sse_response(
        streams, firsts, token_chunk, finish_chunk,
        lambda finals: [{**head, "choices": [], "usage": usage(finals, body.n)}] if body.include_usage else [],
        opening=[with_usage(_chat_chunk(head, i, {"role": "assistant", "content": ""}), body, plans[i], 0)
                 for i in range(body.n)],
        openai=True)
