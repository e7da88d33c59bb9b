"""Errors that map to HTTP statuses. Every one is rendered as {"error": "..."}, but on the
OpenAI-compatible routes as OpenAI's {"error": {"message", "type", "param", "code"}} (error_body).

Plain `ValueError` (including codec.CodecError and pydantic's ValidationError) raised while
decoding a request means "bad input" and becomes a 400; see app.install_error_handlers.
"""
from __future__ import annotations

import asyncio
import functools
import re
import sys
from typing import Optional


class ServiceError(Exception):
    """code: OpenAI's finer name of the error (`model_not_found`), its body's `code` on the
    OpenAI-compatible routes (error_body); the other routes' bodies have none."""

    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.code = status, message, headers or {}, code


class FieldError(ValueError):
    """A bad request (400) about one field of the body whose message does not start with its
    name ("prompt (60 tokens) + max_tokens (10) exceeds ..."): `param` names it, OpenAI's `param`."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


async def within(receive, timeout: float):
    """await receive() within `timeout` seconds, else the builtin TimeoutError (a 503 below;
    the request-body reader answers it 408). asyncio.timeout where there is one (3.11+), not
    wait_for: 3.11's wait_for returns an item that came in the same loop turn as a cancel and
    drops the cancel, so a generation cut at shutdown waited on for tokens that never came and
    its request never sent its 503 (3.10 keeps that race)."""
    if not hasattr(asyncio, "timeout"):
        try:
            return await asyncio.wait_for(receive(), timeout)
        except asyncio.TimeoutError:   # not the builtin one before 3.11
            raise TimeoutError from None
    async with asyncio.timeout(timeout):
        return await receive()


def unavailable(message: str, retry_after_s: int = 1) -> ServiceError:
    return ServiceError(503, message, {"Retry-After": str(retry_after_s)})


def shown_name(name: str) -> str:
    """A model name from the URL as an error echoes it: repr'd, at most 80 characters long (a
    5000-character one came back whole in the body, and the log)."""
    return repr(name) if len(name) <= 80 else repr(name[:80]) + f"... ({len(name)} characters)"


def model_not_found(name: str, served: Optional[str]) -> ServiceError:
    """The OpenAI-compatible routes' 404 of a `model` other than the served language model,
    with OpenAI's code for it, `model_not_found`."""
    return ServiceError(404, f"model {shown_name(name)}: this server completes with {served!r} (GET /v1/models)"
                        if served else f"model {shown_name(name)}: this server serves no language model",
                        code="model_not_found")


def unknown_model(name: str, served) -> ServiceError:
    """The 404 of a model name not served, the name echoed short (shown_name)."""
    return ServiceError(404, f"unknown model {shown_name(name)}; expected one of {list(served)}")


def shutdown_cut() -> ServiceError:
    """The answer of a request still running when --graceful-shutdown-s has passed after
    SIGTERM, on both front ends (middleware._cut, grpc_infer's cut): the draining server's 503,
    with a Retry-After so the client retries elsewhere."""
    return unavailable("the server is shutting down and its graceful shutdown period "
                       "(--graceful-shutdown-s) ended before this request was answered; retry", 5)


# pydantic puts a union's branch in an error's loc: its type as pydantic writes it ("str",
# "list[str]", "function-after[_unicode_text(), str]") or a tagged union's tag (/tokenize's
# forms, UNION_TAGS). Clients sent a field, not a branch: field_loc drops them.
_BRANCH = re.compile(r"^(str|int|float|bool|bytes|none|any|[a-z][a-z0-9_-]*\[.*\])$")
UNION_TAGS = frozenset({"completion-form", "chat-form"})   # routes_tokenize.TokenizeRequest's tags


def field_loc(loc) -> tuple:
    """An error's loc as the client's fields: without the union branch labels pydantic adds."""
    return tuple(x for x in loc if not (isinstance(x, str) and (x in UNION_TAGS or _BRANCH.match(x))))


def validation_message(errors: list[dict], limit: int = 5) -> str:
    """pydantic / FastAPI validation errors as "loc: msg; ..." (the first `limit` distinct ones;
    a union's branches failing alike at one field say it once). A body that is no JSON says
    where and why (FastAPI's own: "body.15: JSON decode error")."""
    def one(e: dict) -> str:
        loc = field_loc(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            return (f"body: not valid JSON{at} ({(e.get('ctx') or {}).get('error', 'decode error')}); "
                    "expected a JSON object")
        return f"{'.'.join(str(x) for x in loc) or 'request'}: {e.get('msg')}"
    seen: dict[str, None] = {}
    for e in errors:   # stops at `limit`: a list of 2M failing items has 2M errors
        seen.setdefault(one(e))
        if len(seen) == limit:
            break
    return "; ".join(seen)


_MULTIPART = {"Missing boundary in multipart.", "Invalid multipart data."}   # Starlette's form parser


def http_error(exc, method: str = "") -> tuple[int, str, dict[str, str]]:
    """(status, message, headers) for a Starlette/FastAPI HTTPException. FastAPI turns a JSON
    body its parser gives up on other than by a syntax error (invalid UTF-8, nesting past the
    recursion limit, a number past CPython's 4300 digits) into a bare 400 "There was an error
    parsing the body"; its cause says what, so the message does. A 405 names the methods the
    route takes (the router's Allow header); a multipart body Starlette cannot split says how
    to send one (a hand-set `Content-Type: multipart/form-data` has no boundary)."""
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405 and headers.get("Allow"):
        return 405, f"Method Not Allowed: {method or 'this method'}; this route takes {headers['Allow']}", headers
    if exc.status_code == 400 and exc.detail in _MULTIPART:
        return 400, (f"{exc.detail.rstrip('.')}: expected a multipart/form-data body with the boundary its "
                     "Content-Type names; let the client write both (curl -F file=@image.jpg, no -H)"), headers
    cause = exc.__cause__
    if isinstance(cause, RecursionError):   # "[[[[...": the stdlib parser recurses per level
        return exc.status_code, ("request body: JSON nested too deeply for the parser; expected objects and "
                                 "arrays nested at most about 900 levels"), {}
    if isinstance(cause, ValueError) and "digits" in str(cause):   # CPython's int-from-text cap
        digits = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        return exc.status_code, f"request body: expected JSON numbers of at most {digits} digits", {}
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start:cause.start + 1].hex()
        return exc.status_code, (f"request body: expected UTF-8 JSON; byte 0x{byte} at offset {cause.start} is "
                                 f"not valid {cause.encoding.upper()} ({cause.reason})"), {}
    return exc.status_code, str(exc.detail), headers


def error_response(exc: BaseException) -> Optional[tuple[int, str, dict[str, str]]]:
    """(status, message, headers) a request error is answered with, or None for an
    unexpected exception (a 500, logged). One table for the FastAPI exception handlers and
    the middleware's direct infer path, so both answer alike."""
    from .batching import BatcherStopped, QueueFull   # here: batching must not import service code

    if isinstance(exc, ServiceError):
        return exc.status, exc.message, exc.headers
    if isinstance(exc, QueueFull):
        return 503, str(exc), {"Retry-After": "1"}
    if isinstance(exc, BatcherStopped):
        return 503, str(exc), {"Retry-After": "5"}
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return 503, "timed out waiting for the model (DWSERVE_REQUEST_TIMEOUT_S); retry later", {"Retry-After": "1"}
    if isinstance(exc, ValueError):   # includes codec.CodecError and pydantic.ValidationError
        return 400, str(exc)[:1000] or "bad request", {}
    return None


# The OpenAI-compatible routes answer errors in OpenAI's shape: the official client shows only
# `error.message` of a body whose "error" is an object ("Error code: 400" and nothing else for
# a plain string), and reads `type`/`code`; inside a stream it raises "An error occurred during
# streaming" unless the event's error is such an object.
_OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/detokenize")
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error"}


def is_openai_path(path: str) -> bool:
    path = path.rstrip("/")
    return path in _OPENAI_PATHS or path.startswith("/v1/models/")


def error_body(status: int, message: str, openai: bool = False, code: Optional[str] = None,
               param: Optional[str] = None) -> dict:
    """A request error's JSON body: {"error": message} (DESIGN.md), or OpenAI's shape with
    `openai` (`type` its class of error; `code` OpenAI's finer name where one is given
    (ServiceError.code); `param` the field at fault where known: a validation error's)."""
    if not openai:
        return {"error": message}
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_param(errors: list[dict]) -> Optional[str]:
    """The first validation error's field as OpenAI's `param` names one ("messages[0].role"),
    or None for the body as a whole."""
    loc = [x for x in field_loc(errors[0].get("loc", ()) if errors else ()) if x != "body"]
    if not loc or errors[0].get("type") == "json_invalid":
        return None
    out = str(loc[0])
    for x in loc[1:]:
        out += f"[{x}]" if isinstance(x, int) else f".{x}"
    return out


# A semantic 400's message starts with the field it is about ("n: at most 8 choices ...",
# "logit_bias[5] must be a number in ..."), after a batch's "prompt[1]: ".
_LEADING_FIELD = re.compile(r"^(?:prompt\[\d+\]: )?([a-z][a-z0-9_]*)(?:\[[^\]]*\])?(?:: | must )")


@functools.lru_cache(maxsize=None)
def _openai_fields() -> frozenset:
    from .routes_tokenize import DetokenizeRequest, TokenizeChatRequest, TokenizeCompletionRequest
    from .schemas_openai import ChatCompletionRequest, CompletionRequest
    return frozenset().union(*(m.model_fields for m in (CompletionRequest, ChatCompletionRequest, DetokenizeRequest,
                                                        TokenizeChatRequest, TokenizeCompletionRequest)))


def openai_param(exc: BaseException) -> Optional[str]:
    """OpenAI's `param` of a request error: the field a FieldError names, else the request field
    a bad-input message starts with (top level: "logit_bias", not "logit_bias[5]"), else None
    (the request as a whole, or several fields)."""
    param = getattr(exc, "param", None)
    if param is not None or not isinstance(exc, ValueError):
        return param
    match = _LEADING_FIELD.match(str(exc))
    return match.group(1) if match and match.group(1) in _openai_fields() else None
