"""`POST /v1/completions` (OpenAI's legacy text completions) over the /v1/generate handler:
one JSON reply, or SSE chunks ending in `data: [DONE]` (streamed, the `n` choices' chunks
interleave as tokens come, each naming its choice `index`). `echo` puts the prompt before each
choice, with logprobs its tokens' too (one forward of the prompt, models/lfm2/scoring.py).
"""
from __future__ import annotations

import asyncio
import codecs
import time
import uuid

from fastapi import APIRouter, Request

from .openai_common import Covered, start, token_name, usage, with_usage
from .routes_v1 import close_streams, final_events, sse_response
from .schemas_openai import CompletionRequest
from .schemas_openai_replies import OPENAI_ERROR_RESPONSES, CompletionResponse

router = APIRouter(prefix="/v1", tags=["openai"])


def _choice(index: int, text: str, finish_reason, logprobs=None) -> dict:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def _alternatives(tokenizer, top: list[dict]) -> dict[str, float]:
    """{name: logprob} of a token's alternatives. Two tokens of one name (a tokenizer may decode
    two alike) are both kept, the later as `token_id:N`: a dict loses what shares a key."""
    out: dict[str, float] = {}
    for x in top:
        name = token_name(tokenizer, x["token_id"])[0]
        out[f"token_id:{x['token_id']}" if name in out else name] = x["logprob"]
    return out


class TextOffsets:
    """Each token's character offset in a choice's text (text_offset), counting on from
    `start` over the tokens given in order: the characters the tokens before it completed, as
    vLLM counts them. A character split over byte tokens (`é` = 0xc3 0xa9) is counted once it
    is whole, so the tokens that spell it share its offset; counting each token's decoded
    length (one U+FFFD per byte) put every later offset to the right, past the text's end.
    The tokens' UTF-8 bytes go through one incremental decoder, as the text was decoded."""

    def __init__(self, tokenizer, start: int = 0):
        self.tok, self.at = tokenizer, start
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def of(self, ids: list[int]) -> list[int]:
        out = []
        for token_id in ids:
            out.append(self.at)
            self.at += len(self._decoder.decode(token_name(self.tok, token_id)[1]))
        return out


def _completion_logprobs(tokenizer, lps: list[dict], offsets: TextOffsets) -> dict:
    """The legacy completions shape of logprob entries (a reply's, or a chunk's): token
    names, their logprobs, top alternatives as {name: logprob}, and each token's offset in
    the choice's text (`offsets` counts on over the choice's tokens). OpenAI's
    spec: `logprobs` most likely alternatives and always the chosen token, so up to
    logprobs + 1 of them, one with `logprobs: 0` (was null: a sampled token out of the top
    ones went missing too), as vLLM gives them. An echoed prompt's first token has no logprob
    and no alternatives (None)."""
    def alternatives(t: dict) -> dict[str, float]:
        chosen = [] if any(x["token_id"] == t["token_id"] for x in t["top"]) else \
            [{"token_id": t["token_id"], "logprob": t["logprob"]}]
        return _alternatives(tokenizer, t["top"] + chosen)
    ids = [t["token_id"] for t in lps]
    return {"tokens": [token_name(tokenizer, i)[0] for i in ids], "token_logprobs": [t["logprob"] for t in lps],
            "top_logprobs": [None if t["top"] is None else alternatives(t) for t in lps],
            "text_offset": offsets.of(ids)}


def _generated(tokenizer, final: dict) -> list[dict]:
    """A JSON reply's entries of its generated tokens: those the text covers, then the stop
    token that ended it (no text, but generated and counted in usage): one entry per
    completion token, as OpenAI's legacy completions and vLLM give them, which evaluation
    harnesses count on (lm-eval reads an echoed choice's token_logprobs[ctxlen:-1])."""
    return Covered.of(tokenizer, final) + final.get("stop_logprobs", [])


def _score(lm, prompts: list[list[int]], top: int, impl: str) -> list[list[dict]]:
    """On the compute thread: each prompt's entries for echo, in the shape of generated ones;
    the prompts scored together (left-padded forwards, models/lfm2/scoring.py)."""
    from models.depthwise import use_impl
    from models.lfm2.scoring import prompts_logprobs
    with use_impl(impl):
        scored = prompts_logprobs(lm, prompts, top)
    return [[{"token_id": ids[0], "logprob": None, "top": None}] + [
        {"token_id": t, "logprob": lp, "top": [{"token_id": i, "logprob": v} for i, v in alts]}
        for t, (lp, alts) in zip(ids[1:], entries)] for ids, entries in zip(prompts, scored)]


async def _echoes(handler, body, prompts, plans) -> list[dict]:
    """What `echo` puts before each prompt's choices (plans: one per prompt): the prompt's text
    (as sent, or its ids decoded) and, with logprobs, its tokens' log-probabilities given the
    tokens before them, the prompts scored together (a compute call per shared forward)."""
    texts = [prompt if isinstance(prompt, str) else plan.tokenizer.decode(plan.ids) if plan.tokenizer is not None
             else "" for prompt, plan in zip(prompts, plans)]
    entries: list = [None] * len(prompts)
    if body.logprobs is not None:
        from models.lfm2.scoring import scoring_groups
        ids = [p.ids for p in plans]
        for group in scoring_groups(ids):   # a compute call per forward: decode steps go on between them
            scored = await asyncio.to_thread(handler.rt.on_compute, _score, handler.lm, [ids[i] for i in group],
                                             body.logprobs, plans[0].impl)
            for i, e in zip(group, scored):
                entries[i] = e
        for i, p in enumerate(ids):
            if entries[i] is None:   # one token: nothing before it to score it by
                entries[i] = [{"token_id": p[0], "logprob": None, "top": None}]
    return [{"echo": True, "text": text, "logprobs": e} for text, e in zip(texts, entries)]


def _requests(body: CompletionRequest, handler) -> list:
    """One GenerateRequest per prompt; a batch of more than --max-prompts is a 400."""
    prompts, limit = body.prompts, handler.rt.settings.max_prompts
    if len(prompts) > limit:
        raise ValueError(f"prompt: at most {limit} prompts per request (DWSERVE_MAX_PROMPTS), got {len(prompts)}")
    return [body.to_generate(prompt) for prompt in prompts]


async def _prefixed(first: dict, events):
    """A choice's events with `first` (already taken from them) put back in front. Closing it
    closes them (their sequence leaves its row then, not when the collector finds them)."""
    try:
        yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()


@router.post("/completions", response_model=CompletionResponse, responses=OPENAI_ERROR_RESPONSES)
async def completions(body: CompletionRequest, request: Request):
    handler, plans, streams, firsts = await start(request, body, lambda handler: _requests(body, handler),
                                                  generate=not body.scores_only)
    prompts, n = body.prompts, body.n
    tok = plans[0].tokenizer   # decodes as the request asked (skip_special_tokens)
    # A text prompt is echoed as sent, so the special tokens encode() added (the bos) have no
    # text there whatever skip_special_tokens says; token ids are echoed decoded by tok.
    lead_toks = [handler.tokenizer if isinstance(prompt, str) else tok for prompt in prompts]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": handler.rt.name}
    try:   # per prompt; choice i is prompt i // n's
        echoes = await _echoes(handler, body, prompts, plans[::n]) if body.echo else None
    except BaseException:    # the choices are already generating: free their rows
        await close_streams(streams)
        raise

    def logprobs_of(entries, offsets: TextOffsets, tokenizer=tok):
        return None if body.logprobs is None else _completion_logprobs(tokenizer, entries, offsets)

    if not body.stream:
        finals = await final_events(request, streams, firsts)

        def choice(i: int, final: dict) -> dict:
            echo, lead_tok = echoes[i // n] if echoes else None, lead_toks[i // n]
            lead_text, lead = (echo["text"], echo["logprobs"] or []) if echo else ("", [])
            logprobs = None
            if body.logprobs is not None:
                prompt = logprobs_of(lead, TextOffsets(lead_tok), lead_tok)
                completion = logprobs_of(_generated(tok, final), TextOffsets(tok, len(lead_text)))
                logprobs = {k: prompt[k] + completion[k] for k in completion}
            return _choice(i, lead_text + final["text"], final["finish_reason"], logprobs)
        return {**head, "choices": [choice(i, f) for i, f in enumerate(finals)], "usage": usage(finals, n)}
    # per choice: where its next generated token's text starts (after its echoed prompt)
    offsets = [TextOffsets(tok, len(echoes[i // n]["text"]) if echoes else 0) for i in range(len(plans))]
    covers = [Covered(tok) for _ in plans]
    if echoes:                   # each choice's stream opens with its prompt
        streams = [_prefixed(f, s) for f, s in zip(firsts, streams)]   # the generation's first put back
        firsts = [echoes[i // n] for i in range(len(plans))]

    def token_chunk(i: int, event: dict) -> dict:
        logprobs = None
        if body.logprobs is not None:
            if event.get("echo"):
                logprobs = logprobs_of(event["logprobs"] or [], TextOffsets(lead_toks[i // n]), lead_toks[i // n])
            else:
                logprobs = logprobs_of(covers[i].take(event["logprobs"], event["text"]), offsets[i])
        return with_usage({**head, "choices": [_choice(i, event["text"], None, logprobs)]}, body, plans[i],
                          event.get("tokens", 0))   # an echo event: none yet

    def finish_chunk(i: int, final: dict) -> dict:
        rest = covers[i].rest(final) + final.get("stop_logprobs", []) if body.logprobs is not None else []
        logprobs = logprobs_of(rest, offsets[i]) if rest else None
        chunk = {**head, "choices": [_choice(i, "", final["finish_reason"], logprobs)]}
        return with_usage(chunk, body, plans[i], final["usage"]["completion_tokens"])

    return sse_response(
        streams, firsts, token_chunk, finish_chunk,
        lambda finals: [{**head, "choices": [], "usage": usage(finals, n)}] if body.include_usage else [], openai=True)
