"""Text generation over gRPC, as Triton serves a model of its vLLM backend (or a TRT-LLM
ensemble): a ModelInfer or ModelStreamInfer request to the generate model (`lfm2`) whose inputs
include `text_input` generates text, so `tritonclient.grpc` stream clients, genai-perf and
perf_analyzer load-test dwserve over gRPC as they do Triton. Requests without `text_input` are
OIP inference (input_ids -> logits), as before.

Inputs, each one element (shape [1] or [1, 1]):
  text_input               BYTES  the prompt (UTF-8)
  stream                   BOOL   true: one response per piece of text (ModelStreamInfer only);
                                  else the request parameter `stream`, else sampling_parameters'
  sampling_parameters      BYTES  a JSON object of settings, as the vLLM backend takes them
  exclude_input_in_output  BOOL   false: text_output starts with the prompt
  and TRT-LLM's tensors named as a setting (max_tokens INT32, temperature, top_k, top_p,
  random_seed, stop_words / bad_words BYTES of any length, ...). The request's `parameters`
  may carry the same settings (Triton's own keys, below, aside). They go through REST's
  generate path (routes_v2_generate: to_generate, GenerateHandler.plan and events), so the
  limits, messages, metrics and continuous batching are the same; its defaults too: the
  prompt is left out unless exclude_input_in_output is false, also when streaming (the vLLM
  backend refuses that case; here the first piece carries the prompt, as REST's stream does).
Output `text_output` (BYTES [1]). Streamed: one response per piece as it comes (the text
since the last, as the vLLM backend sends it), parameter `triton_final_response` false; then
one marked true: with `text_output` "" (an empty piece, the vLLM backend's last when the end
adds no text), or no outputs at all when the request asked `triton_enable_empty_final_response`
(Triton's empty final response). Not streamed (or over ModelInfer): one response, the whole text.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from pydantic import ValidationError
from tritonclient.grpc import service_pb2 as pb

from .classification import serialize_bytes
from .codec import DTYPES, CodecError, check_shape, refuse_shared_memory
from .errors import validation_message
from .grpc_codec import _typed_values, parameters_to_dict
from .routes_v2_generate import check_generate_model, plan_generation
from .schemas import TritonGenerateParameters, TritonGenerateRequest

TEXT_INPUT, TEXT_OUTPUT = "text_input", "text_output"
_FLAGS = ("stream", "exclude_input_in_output")       # BOOL inputs
_SETTINGS = set(TritonGenerateParameters.model_fields) - set(_FLAGS)
_WORD_LISTS = ("stop", "stop_words", "bad_words")  # BYTES inputs of any number of strings
_OBJECTS = ("structured_outputs", "allowed_token_ids", "stop_token_ids")   # JSON only: sampling_parameters
# Triton's own request parameters (tritonclient's sequence_id, priority, timeout, the stream
# flag): not generation settings, so not checked as one (ModelInfer ignores them too).
_TRITON_PARAMETERS = {"triton_enable_empty_final_response", "sequence_id", "sequence_start", "sequence_end",
                      "priority", "timeout"}


def is_generation(request) -> bool:
    return any(t.name == TEXT_INPUT for t in request.inputs)


@dataclass
class Generation:
    """A request's generation: Triton's generate body, streamed or not, and whether the last
    response is an empty one (triton_enable_empty_final_response)."""
    body: TritonGenerateRequest
    stream: bool
    empty_final: bool


def _strings(blob: bytes, count: int, name: str) -> list[str]:
    """A raw BYTES tensor (each element a 4-byte little-endian length, then its bytes) -> text."""
    out, at = [], 0
    for _ in range(count):
        if at + 4 > len(blob):
            raise CodecError(f"input {name!r}: BYTES contents end inside element {len(out)}; expected each "
                             "element as a 4-byte little-endian length and its bytes")
        size, = struct.unpack_from("<I", blob, at)
        if at + 4 + size > len(blob):
            raise CodecError(f"input {name!r}: element {len(out)} is said to be {size} bytes, "
                             f"{len(blob) - at - 4} remain")
        out.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    if at != len(blob):
        raise CodecError(f"input {name!r}: {len(blob) - at} bytes after its {count} element(s)")
    try:
        return [b.decode("utf-8") for b in out]
    except UnicodeDecodeError:
        raise CodecError(f"input {name!r}: expected UTF-8 text") from None


def _values(request, i: int, tensor, max_elements: int) -> list:
    """Input i's values as a flat list of str (BYTES), bool or numbers."""
    name, raw = tensor.name, request.raw_input_contents
    count = check_shape([int(d) for d in tensor.shape], max_elements, name)
    if raw and len(raw) != len(request.inputs):
        raise CodecError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                         "expected one per input, in the order of `inputs`")
    if raw and tensor.HasField("contents"):   # two values for one input: refused, as decode_request does
        raise CodecError(f"input {name!r}: raw_input_contents is used, so `contents` must be empty")
    if tensor.datatype == "BYTES":
        if raw:
            return _strings(raw[i], count, name)
        values = list(tensor.contents.bytes_contents)
        others = [f.name for f, _ in tensor.contents.ListFields() if f.name != "bytes_contents"]
        if others:   # as decode_request refuses them
            raise CodecError(f"input {name!r}: BYTES values go in contents.bytes_contents, got {others}")
        if len(values) != count:
            raise CodecError(f"input {name!r}: shape {list(tensor.shape)} needs {count} values, "
                             f"contents.bytes_contents has {len(values)}")
        return _strings(b"".join(struct.pack("<I", len(v)) + v for v in values), count, name)
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise CodecError(f"input {name!r}: datatype {tensor.datatype!r} unsupported; expected BYTES, BOOL or "
                         "a number type")
    if raw:
        if len(raw[i]) != count * dtype.itemsize:
            raise CodecError(f"input {name!r}: raw contents must be {count * dtype.itemsize} bytes "
                             f"({count} x {tensor.datatype}), got {len(raw[i])}")
        return np.frombuffer(raw[i], dtype=dtype, count=count).tolist()
    return _typed_values(tensor, dtype, count).tolist()


def _one(values: list, tensor, kind: Optional[type] = None):
    """The single value of a generation input (shape [1] or [1, 1]); kind str: BYTES, bool:
    BOOL, None: any (a setting, checked by its schema as REST's is)."""
    if len(values) != 1 or list(tensor.shape) not in ([1], [1, 1]):
        raise CodecError(f"input {tensor.name!r}: expected one value (shape [1] or [1, 1]), got shape "
                         f"{list(tensor.shape)}")
    if kind is not None and not isinstance(values[0], kind):
        raise CodecError(f"input {tensor.name!r}: expected {'BYTES' if kind is str else 'BOOL'}, "
                         f"got {tensor.datatype}")
    return values[0]


def _json_field(text: Optional[str], name: str, default):
    """`name` of the JSON object `text` holds, else default (text that is no JSON object is
    refused where the body is validated, with its own message)."""
    try:
        value = json.loads(text) if text is not None else None
    except (ValueError, RecursionError):   # refused with its message where the body is validated
        return default
    return value.get(name, default) if isinstance(value, dict) else default


def without_text_output(requested: list) -> list:
    """A tensor request's requested outputs (OutputRequest) less text_output, which gRPC's
    metadata lists beside them (triton_ext.TEXT_INPUTS): perf_analyzer asks for every output
    listed, both interfaces'. Asking for text_output alone is a 400."""
    kept = [out for out in requested if out.name != TEXT_OUTPUT]
    if requested and not kept:
        raise CodecError(f"output {TEXT_OUTPUT!r}: a generation's output; send text_input to generate text")
    return kept


def parse(request, max_elements: int, tensor_outputs: frozenset = frozenset()) -> Generation:
    """A ModelInferRequest with text_input -> its Generation, or ValueError (a 400) naming the
    input or setting that is wrong and what was expected. tensor_outputs: the model's tensor
    interface's outputs, skipped when asked for beside text_output (as without_text_output)."""
    top: dict = {}
    flags = {"stream": False, "exclude_input_in_output": None}
    seen: set[str] = set()
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in seen:
            raise CodecError(f"input {name!r} appears twice; expected each input once")
        seen.add(name)
        refuse_shared_memory(f"input {name!r}", parameters_to_dict(tensor.parameters),
                             "send its value in raw_input_contents (tritonclient: set_data_from_numpy)")
        values = _values(request, i, tensor, max_elements)
        if name == TEXT_INPUT:
            top["text_input"] = _one(values, tensor, str)
        elif name in _FLAGS:
            flags[name] = _one(values, tensor, bool)
        elif name == "sampling_parameters":
            top["sampling_parameters"] = _one(values, tensor, str)
        elif name in _WORD_LISTS:
            if any(not isinstance(v, str) for v in values):
                raise CodecError(f"input {name!r}: expected BYTES (words), got {tensor.datatype}")
            top[name] = values
        elif name in _SETTINGS and name not in _OBJECTS:
            top[name] = _one(values, tensor)
        else:
            raise CodecError(f"input {name!r}: not a generation input; expected text_input, stream, "
                             "sampling_parameters, exclude_input_in_output, or a setting by its name "
                             f"({', '.join(sorted(_SETTINGS - set(_OBJECTS)))})"[:600])
    names = [out.name for out in request.outputs]
    for name in names:   # the model's tensor outputs are skipped beside text_output (without_text_output)
        if name != TEXT_OUTPUT and (name not in tensor_outputs or TEXT_OUTPUT not in names):
            raise CodecError(f"output {name!r}: a generation's only output is {TEXT_OUTPUT!r}")
    params = parameters_to_dict(request.parameters)
    empty_final = params.get("triton_enable_empty_final_response") is True
    settings = {k: v for k, v in params.items() if k not in _TRITON_PARAMETERS}
    if "stream" in settings and "stream" not in seen:   # a flag given as a request parameter
        flags["stream"] = settings.pop("stream")
    elif "stream" not in seen:   # or in sampling_parameters, where some vLLM-backend clients put it
        flags["stream"] = _json_field(top.get("sampling_parameters"), "stream", flags["stream"])
    if flags["exclude_input_in_output"] is not None:
        top["exclude_input_in_output"] = flags["exclude_input_in_output"]
    try:
        body = TritonGenerateRequest.model_validate(
            {**top, "id": request.id or None, **({"parameters": settings} if settings else {})})
    except ValidationError as exc:
        raise ValueError(f"invalid generate request: {validation_message(exc.errors())}") from None
    if not isinstance(flags["stream"], bool):
        raise ValueError(f"stream: expected a boolean, got {flags['stream']!r}"[:200])
    return Generation(body, flags["stream"], empty_final)


def text_response(request, impl: str, text: Optional[str], final: Optional[bool]):
    """A generation's ModelInferResponse: text_output [1] holding `text` (None: no outputs, the
    empty final response); `final`: its triton_final_response (None: left unset)."""
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    response.parameters["depthwise_impl"].string_param = impl
    if final is not None:
        response.parameters["triton_final_response"].bool_param = final
    if text is not None:
        response.outputs.add(name=TEXT_OUTPUT, datatype="BYTES", shape=[1])
        response.raw_output_contents.append(serialize_bytes(np.array([text.encode()], dtype=object)))
    return response


async def generate(svc, request, meter, emit: Callable, unary: bool) -> None:
    """Run `request`'s generation, calling emit(response, last) per response (streamed: each
    piece, then the final one; else one). `meter` (grpc_infer._Metered) learns the impl and the
    200. unary (ModelInfer): one response whatever `stream` says. A cancel (the client left)
    closes the generation's events, so its sequence leaves its row before the next step."""
    check_generate_model(svc, request.model_name, request.model_version or None)
    rt = svc.runtime(request.model_name)   # 503 while it loads
    generation = parse(request, svc.settings.max_elements, frozenset(spec.name for spec in rt.served.outputs))
    stream = generation.stream and not unary
    plan, with_prompt = await plan_generation(svc.generate, generation.body, stream, top_level="the input tensors")
    meter.impl = plan.impl
    events = svc.generate.events(plan)
    pending = generation.body.text_input if with_prompt else ""   # the prompt, until the first text goes out
    try:
        async for event in events:
            if event.get("done"):
                final = event
                break
            if stream:
                emit(text_response(request, plan.impl, pending + event["text"], False), False)
                pending = ""
    finally:
        await events.aclose()   # (after a cancel or error: frees the sequence's row)
    if not stream:
        emit(text_response(request, plan.impl, pending + final["text"], None if unary else True), True)
    elif generation.empty_final:
        if pending:   # nothing was generated: the prompt still goes out, as a piece
            emit(text_response(request, plan.impl, pending, False), False)
        emit(text_response(request, plan.impl, None, True), True)
    else:
        emit(text_response(request, plan.impl, pending, True), True)
    meter.status = 200
