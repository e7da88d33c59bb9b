"""Triton's generate extension over the /v1/generate handler: `POST /v2/models/{m}/generate`
(one JSON reply) and `/generate_stream` (server-sent events, one per token, each a generate
response whose `text_output` is that token's text; no `[DONE]` line, as Triton sends none).

The request is Triton's: `{"text_input": ..., "parameters": {...}}`, where the sampling
parameters may also sit at the top level, as TRT-LLM's ensembles take them (`max_tokens`,
`stop_words`, `random_seed`, ...) or in `sampling_parameters` as a JSON string, as Triton's vLLM
backend takes them (with its `exclude_input_in_output`); it is read as JSON whatever its Content-Type
(routes_v2.json_body). Same limits, continuous batching and metrics as /v1/generate; errors before the first byte are `{"error": ...}` with a 4xx/503, after it an
`{"error": ...}` event (Triton's rule for streams).
"""
from __future__ import annotations

import json
from typing import Optional

from fastapi import APIRouter, Request
from pydantic import ValidationError

from .errors import ServiceError, unknown_model, validation_message
from .handlers.generate import given_fields
from .infer import check_version
from .routes_v1 import ERROR_RESPONSES, final_events, first_events, handler_of, sse_response
from .routes_v2 import body_doc, json_body
from .schemas import GenerateRequest, TritonGenerateParameters, TritonGenerateRequest, TritonGenerateResponse

router = APIRouter(prefix="/v2", tags=["triton extensions"])
_PARAMETERS = set(TritonGenerateParameters.model_fields)


def _sampling_parameters(value) -> dict:
    """vLLM's backend takes the parameters as one JSON string (`"sampling_parameters":
    "{\"max_tokens\": 16}"`); an object is taken as is. Checked as `parameters` is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("sampling_parameters: expected a JSON object (or a string holding one), "
                             f"got unparseable text {value[:80]!r}") from None
        except RecursionError:   # "[[[[...": the stdlib parser recurses per level
            raise ValueError("sampling_parameters: JSON nested too deeply; expected a flat object of "
                             "settings") from None
    if not isinstance(value, dict):
        raise ValueError(f"sampling_parameters: expected a JSON object, got {type(value).__name__}")
    try:
        p = TritonGenerateParameters.model_validate(value)
    except ValidationError as exc:
        raise ValueError(f"sampling_parameters: {validation_message(exc.errors())}") from None
    return {k: getattr(p, k) for k in p.model_fields_set}


def _merged(body: TritonGenerateRequest, top_level: str) -> TritonGenerateParameters:
    """The top-level, `parameters` and `sampling_parameters` settings as one set; a name set
    in more than one must agree. top_level: what the client calls the top level, for the message."""
    sources = {top_level: {k: getattr(body, k) for k in body.model_fields_set & _PARAMETERS},
               "parameters": ({k: getattr(body.parameters, k) for k in body.parameters.model_fields_set}
                              if body.parameters else {}),
               "sampling_parameters": (_sampling_parameters(body.sampling_parameters)
                                       if body.sampling_parameters is not None else {})}
    merged: dict = {}
    for where, values in sources.items():
        for k, v in values.items():
            if k in merged and merged[k][1] != v:
                raise ValueError(f"{k!r} set twice with different values, in {merged[k][0]} and in {where}; "
                                 "expected each once")
            merged[k] = (where, v)
    return TritonGenerateParameters(**{k: v for k, (_, v) in merged.items()})


def _words(value) -> Optional[list[str]]:
    """TRT-LLM sends word lists as a string or a list; empty means none."""
    words = [value] if isinstance(value, str) else list(value or [])
    words = [w for w in words if w]
    return words or None


def _stop_ids(p: TritonGenerateParameters, vocab_size: Optional[int]) -> Optional[list[int]]:
    """stop_token_ids plus TRT-LLM's end_id (generation ends when it is produced, the token not in
    the text, as a stop token id); pad_id is checked and ignored (no reply is padded). Each a
    token id of the vocabulary (a 400 naming it)."""
    for name in ("end_id", "pad_id"):
        value = getattr(p, name)
        if value is not None and vocab_size is not None and value >= vocab_size:
            raise ValueError(f"{name}: expected a token id in [0, {vocab_size}) (the model's vocab_size), got {value}")
    if p.end_id is None:
        return p.stop_token_ids
    return list(dict.fromkeys([*(p.stop_token_ids or ()), p.end_id]))


def to_generate(body: TritonGenerateRequest, stream: bool, top_level: str = "the top level",
                vocab_size: Optional[int] = None) -> tuple[GenerateRequest, bool, set[str]]:
    """The /v1/generate request, whether text_output starts with the prompt, and the parameters
    the client set, null ones not (the others take the model's sampling defaults). top_level:
    where the top-level settings came from, as the client knows it (gRPC: input tensors).
    vocab_size: the model's, that end_id and pad_id must be below."""
    p = _merged(body, top_level)
    if p.stop is not None and p.stop_words is not None:
        raise ValueError("stop and stop_words: give one of them")
    if p.seed is not None and p.random_seed is not None and p.seed != p.random_seed:
        raise ValueError("seed and random_seed: give one of them")
    return GenerateRequest(prompt=body.text_input, max_new_tokens=p.max_tokens, temperature=p.temperature,
                           top_k=p.top_k if p.top_k and p.top_k > 0 else None, top_p=p.top_p,
                           seed=p.seed if p.seed is not None else p.random_seed,
                           stop=_words(p.stop if p.stop is not None else p.stop_words), ignore_eos=p.ignore_eos,
                           presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
                           repetition_penalty=p.repetition_penalty, min_p=p.min_p, min_tokens=p.min_tokens,
                           stop_token_ids=_stop_ids(p, vocab_size), include_stop_str_in_output=p.include_stop_str_in_output,
                           skip_special_tokens=p.skip_special_tokens, structured_outputs=p.structured_outputs,
                           bad_words=_words(p.bad_words), allowed_token_ids=p.allowed_token_ids,
                           depthwise_impl=p.depthwise_impl, stream=stream), p.exclude_input_in_output is False, \
        given_fields(p)


def check_generate_model(svc, model: str, version: Optional[str]) -> None:
    """A generate request's model and version (the URL's; a gRPC request's model_name): 404 for
    no served model, 400 for one that does not generate text. Also the gRPC front end's."""
    check_version(version)
    if model not in svc.model_names:
        raise unknown_model(model, svc.model_names)
    if model != svc.generate_model:
        serves = f"the generate extension serves {svc.generate_model!r}" if svc.generate_model \
            else "this server serves no language model"
        raise ServiceError(400, f"model {model!r} does not generate text; {serves}")


def _check_model(model: str, version: Optional[str], request: Request) -> None:
    """The URL's model and version, before the body is read (as /infer checks them): a body
    wrong for the generate route is no news to a client that named the wrong model."""
    check_generate_model(request.app.state.service, model, version)


async def plan_generation(handler, body: TritonGenerateRequest, stream: bool, top_level: str = "the top level"):
    """A Triton generate request -> (its GenerateHandler Plan, whether text_output starts with
    the prompt): the same settings, limits and messages over REST and gRPC (grpc_generate.py)."""
    generate_request, with_prompt, client_set = to_generate(body, stream, top_level, handler.vocab_size)
    plan = await handler.plan(generate_request, max_tokens_name="max_tokens", client_set=client_set,
                              prompt_name="text_input")
    return plan, with_prompt


async def _generate(model: str, body: TritonGenerateRequest, request: Request, stream: bool):
    handler = handler_of(request, "generate")
    plan, with_prompt = await plan_generation(handler, body, stream)
    request.state.dw_impl = plan.impl
    events = handler.events(plan)
    firsts = await first_events(request, [events])   # QueueFull / timeouts: before any byte is sent
    head = {"model_name": model, "model_version": "1", **({"id": body.id} if body.id is not None else {})}
    params = {"depthwise_impl": plan.impl}

    def final_of(final: dict, text: str) -> dict:
        return {**head, "text_output": text, "finish_reason": final["finish_reason"],
                "usage": final["usage"], "parameters": params}

    pending = [body.text_input if with_prompt else ""]   # the prompt, until the first text goes out

    def take(text: str) -> str:
        out, pending[0] = pending[0] + text, ""
        return out

    if not stream:
        final, = await final_events(request, [events], firsts)   # stops if the client leaves
        return final_of(final, take(final["text"]))
    return sse_response([events], firsts, lambda i, event: {**head, "text_output": take(event["text"])},
                        lambda i, final: final_of(final, take("")),
                        lambda finals: [], done_marker=False)


@router.post("/models/{model}/generate", response_model=TritonGenerateResponse, responses=ERROR_RESPONSES,
             openapi_extra=body_doc(TritonGenerateRequest), response_model_exclude_none=True)   # no "id": null when none was sent
@router.post("/models/{model}/versions/{version}/generate", response_model=TritonGenerateResponse,
             responses=ERROR_RESPONSES, include_in_schema=False, response_model_exclude_none=True)
async def generate(model: str, request: Request, version: Optional[str] = None):
    """Triton's generate extension: the whole text in one reply."""
    _check_model(model, version, request)
    body = await json_body(request, TritonGenerateRequest, "generate request")
    return await _generate(model, body, request, stream=False)


@router.post("/models/{model}/generate_stream", responses=ERROR_RESPONSES,
             openapi_extra=body_doc(TritonGenerateRequest))
@router.post("/models/{model}/versions/{version}/generate_stream", responses=ERROR_RESPONSES, include_in_schema=False)
async def generate_stream(model: str, request: Request, version: Optional[str] = None):
    """Triton's generate extension, streamed: an SSE event per token (`text_output` = its text),
    then one with `text_output` "" and the finish reason and usage."""
    _check_model(model, version, request)
    body = await json_body(request, TritonGenerateRequest, "generate request")
    return await _generate(model, body, request, stream=True)
