"""gRPC messages protobuf cannot parse: a client's mistake, answered as one.

grpc parses each request message with the method's deserializer before any servicer code runs;
a DecodeError there came back as UNKNOWN ("Unexpected DecodeError"), with a traceback logged at
ERROR, and in ModelStreamInfer it ended the whole stream with status OK, the requests after it
never answered. DecodeGuard (a server interceptor) parses with a deserializer that returns an
Undecodable in place of raising, and:
  unary methods    answer it INVALID_ARGUMENT, naming the message type and protobuf's reason;
  streams          get it as a request: ModelStreamInfer answers it with `error_message` (no
                   id to match: protobuf found none) and reads on (grpc_infer.py).
"""
from __future__ import annotations

import inspect

import grpc
from google.protobuf.message import DecodeError


class Undecodable:
    """A request message protobuf could not parse; empty ids, as a request that names none."""
    model_name = model_version = id = ""

    def __init__(self, type_name: str, error: Exception):
        self.unary_message = f"the request is not a valid {type_name} message ({error})"
        self.message = self.unary_message + "; the stream goes on"    # ModelStreamInfer's error answer


def _tolerant(deserializer):
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    type_name = type_name.full_name if type_name is not None else "protobuf"

    def parse(data: bytes):
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(type_name, exc)
    return parse


def _refusing(behaviour):
    """A unary behaviour that answers an Undecodable request INVALID_ARGUMENT."""
    async def call(request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.unary_message)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result
    return call


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Every method's request deserializer made tolerant (see the module's docstring)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(request_deserializer=parse, unary_unary=_refusing(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(request_deserializer=parse, unary_stream=_refusing_stream(handler.unary_stream))
        return handler._replace(request_deserializer=parse)    # streamed requests: the servicer's to answer


def _refusing_stream(behaviour):
    """The same for a response-streaming behaviour: an async generator, or a coroutine that
    writes its responses (context.write: the health service's Watch); each kept as it is."""
    if not inspect.isasyncgenfunction(behaviour):
        return _refusing(behaviour)

    async def call(request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.unary_message)
        async for response in behaviour(request, context):
            yield response
    return call
