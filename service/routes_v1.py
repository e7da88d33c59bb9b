"""/v1 convenience routes: image classification and text generation (JSON or SSE stream)."""
from __future__ import annotations

import asyncio
import json
import re
import typing
from typing import Optional

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from .disconnect import unless_disconnected
from .errors import ServiceError, error_body, error_response
from .schemas import ClassifyResponse, ErrorResponse, GenerateRequest, GenerateResponse, ImplName

router = APIRouter(prefix="/v1", tags=["v1"])
ERROR_RESPONSES = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)}


def handler_of(request: Request, kind: str):
    """The server's "classify" or "generate" handler, once its model is loaded: 404 when the
    model is not served, 503 while it loads."""
    svc = request.app.state.service
    name = svc.classify_model if kind == "classify" else svc.generate_model
    if name is None:
        # the route asked (OpenAI's and Triton's generate routes come here too), not always /v1/generate
        raise ServiceError(404, f"{request.url.path} needs the {'mobilenet_v2' if kind == 'classify' else 'lfm2'} "
                                f"model, which this server does not serve (DWSERVE_MODELS)")
    svc.runtime(name)  # 503 while loading
    return svc.classify if kind == "classify" else svc.generate


@router.post("/classify", response_model=ClassifyResponse, responses=ERROR_RESPONSES)
async def classify(request: Request, file: UploadFile = File(..., description="an image (JPEG, PNG, ...)"),
                   top_k: int = Query(5, ge=1, le=1000), depthwise_impl: Optional[ImplName] = Query(None)):
    refuse_unknown_query(request, _FORM_OPTIONS)
    handler = handler_of(request, "classify")
    # FastAPI binds the last of several `file` parts; the others would be dropped unanswered.
    # (The form is FastAPI's own, already parsed: Starlette caches it on the request.)
    form = await request.form()
    parts = len(form.getlist("file"))
    if parts > 1:
        raise ValueError(f"file: expected one 'file' part (one image per request), got {parts}")
    options = _form_options(form, request.query_params)
    if "top_k" in options:
        top_k = _form_top_k(options["top_k"])
    if "depthwise_impl" in options:
        if options["depthwise_impl"] not in typing.get_args(ImplName):
            raise ValueError(f"depthwise_impl: expected one of {list(typing.get_args(ImplName))}, "
                             f"got {options['depthwise_impl']!r}"[:300])
        depthwise_impl = options["depthwise_impl"]
    impl = handler.rt.check_impl(depthwise_impl)
    image = await asyncio.to_thread(handler.decode, await file.read())
    # The request's impl labels its metrics from here on: a request refused before any model work
    # (a broken image) counts under the server default, as a 4xx of /infer or /v1/generate does.
    request.state.dw_impl = impl
    # A client that gave up while its image waited for a batch leaves no forward behind (499).
    logits = await unless_disconnected(request, handler.predict(image, impl))
    return handler.encode(logits, top_k, impl)


_FORM_OPTIONS = ("top_k", "depthwise_impl")


def refuse_unknown_query(request: Request, takes: tuple[str, ...]) -> None:
    """A 400 naming the query parameters a dwserve-defined route (/v1/classify, /v1/generate)
    does not take: `?topk=3` answered 200 with the default 5 labels. The routes of protocols
    defined elsewhere (OpenAI's, OIP infer, Triton's generate) ignore unknown ones, as OpenAI,
    vLLM, KServe and Triton do: their clients and gateways add their own (Azure's api-version)."""
    unknown = sorted({key for key in request.query_params.keys() if key not in takes})
    if unknown:
        takes_text = f"takes only {' and '.join(takes)} as query parameters" if takes else \
            "takes no query parameters: send its fields in the JSON body"
        raise ValueError(f"query parameters {unknown}: {request.url.path} {takes_text}"[:300])


def _form_options(form, query) -> dict[str, str]:
    """/v1/classify's options sent as form fields beside the image (`curl -F file=@x.jpg -F
    top_k=2`, the natural form for a multipart request), read as their query parameters; they
    were dropped without a word. A field the route does not take is a 400, not ignored."""
    unknown = sorted({key for key in form.keys() if key != "file" and key not in _FORM_OPTIONS})
    if unknown:
        raise ValueError(f"form fields {unknown}: /v1/classify takes the image as 'file', and top_k and "
                         "depthwise_impl as query parameters or form fields"[:300])
    options = {}
    for key in _FORM_OPTIONS:
        values = form.getlist(key)
        # twice in the query too: FastAPI's Query(...) takes the last one without a word
        if len(query.getlist(key)) > 1 or len(values) > 1 or (values and key in query):
            raise ValueError(f"{key}: given more than once (query parameter or form field); give it once")
        if not values:
            continue
        if not isinstance(values[0], str):
            raise ValueError(f"{key}: expected a plain form field, got a file")
        options[key] = values[0].strip()
    return options


def _form_top_k(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= 1000:
        raise ValueError(f"top_k: expected an integer 1..1000, got {value!r}"[:200])
    return int(value)


async def _all(awaitables) -> list:
    """asyncio.gather, but the first failure (or a cancel) cancels the rest, so no
    generation is left running unwatched and every event stream can be closed after."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def first_events(request: Request, streams) -> list[dict]:
    """Each generation's first event (GenerateHandler.events), so QueueFull and timeouts
    surface before any byte of the reply is sent. If one fails or the client leaves while they
    wait (ClientDisconnected), every stream is closed: their sequences leave their rows."""
    try:
        return await unless_disconnected(request, _all(s.__anext__() for s in streams))
    except BaseException:
        await close_streams(streams)
        raise


async def close_streams(streams) -> None:
    """Close every generation's events: their sequences leave their rows (after an error
    between starting the streams and reading them to the end)."""
    for s in streams:
        await s.aclose()


async def final_events(request: Request, streams, firsts) -> list[dict]:
    """Each generation's final summary, its events read to the end, for a JSON reply. Nothing
    is written to the client meanwhile, so only the disconnect watcher can tell it has left:
    then every generation stops (ClientDisconnected) instead of running all its tokens."""
    async def last(event, events):
        async for event in events:
            pass
        return event

    try:
        return await unless_disconnected(request, _all(last(f, s) for f, s in zip(firsts, streams)))
    finally:
        await close_streams(streams)


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _in_band(exc: Exception, openai: bool) -> dict:
    """An error's event once the headers are sent: what its 4xx/503 would have said (a timeout
    names DWSERVE_REQUEST_TIMEOUT_S; the builtin TimeoutError's own text is empty), else the
    exception's type and text; in OpenAI's shape on its routes (errors.error_body)."""
    known = error_response(exc)
    status, message = known[:2] if known is not None else (500, f"{type(exc).__name__}: {exc}")
    return error_body(status, message[:300], openai)


def sse_response(streams, firsts, token_chunk, finish_chunk, tail, done_marker: bool = True,
                 opening=(), openai: bool = False) -> StreamingResponse:
    """Generations' events (GenerateHandler.events, each stream's first already taken in
    `firsts`) as server-sent events in the order they come, after the `opening` payloads
    (chat's role chunk per choice): token_chunk(i, event) per token of
    generation i, finish_chunk(i, final) when it ends, tail(finals) after the last one, then
    [DONE] (unless done_marker is False: Triton's generate_stream sends none). An error after
    the headers are sent is reported in-band; a client that leaves stops every generation.
    One generation for /v1/generate and Triton's generate, `n` for the OpenAI routes."""
    async def stream():
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i, event, events):
            try:
                while True:
                    queue.put_nowait((i, event))
                    if event.get("done"):
                        return
                    event = await events.__anext__()
            except Exception as exc:  # noqa: BLE001 - reported in-band below
                queue.put_nowait((i, exc))

        tasks = [asyncio.ensure_future(pump(i, f, s)) for i, (f, s) in enumerate(zip(firsts, streams))]
        finals: list = [None] * len(streams)
        try:
            for payload in opening:
                yield _sse(payload)
            while any(f is None for f in finals):
                i, event = await queue.get()
                if isinstance(event, Exception):
                    raise event
                if event.get("done"):
                    finals[i] = event
                    yield _sse(finish_chunk(i, event))
                else:
                    yield _sse(token_chunk(i, event))
            for payload in tail(finals):
                yield _sse(payload)
            if done_marker:
                yield b"data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - headers are sent; report in-band and end
            yield _sse(_in_band(exc, openai))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in streams:
                await s.aclose()   # stops generation if the client went away

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/generate", response_model=GenerateResponse, responses=ERROR_RESPONSES)
async def generate(body: GenerateRequest, request: Request):
    refuse_unknown_query(request, ())
    handler = handler_of(request, "generate")
    plan = await handler.plan(body)
    request.state.dw_impl = plan.impl
    events = handler.events(plan)
    firsts = await first_events(request, [events])
    name, params = handler.rt.name, {"depthwise_impl": plan.impl}
    if not body.stream:
        final, = await final_events(request, [events], firsts)
        return {"model": name, "text": final["text"], "token_ids": final["token_ids"],
                "finish_reason": final["finish_reason"], "usage": final["usage"], "parameters": params,
                "logprobs": final.get("logprobs")}

    # each event as the handler makes it, less what only the OpenAI routes read: its running token
    # count (their usage) and the ending stop token's logprobs (completions' last entry)
    return sse_response([events], firsts, lambda i, event: {k: v for k, v in event.items() if k != "tokens"},
                        lambda i, final: {**{k: v for k, v in final.items() if k != "stop_logprobs"},
                                          "model": name, "parameters": params}, lambda finals: [])
