"""OIP v2 gRPC messages <-> numpy: the `ModelInferRequest`/`ModelInferResponse` side of
service/codec.py (which does the REST JSON and binary bodies).

The messages are the protocol's own generated classes, as shipped in tritonclient
(`tritonclient.grpc.service_pb2`, package `inference`, service `GRPCInferenceService`: the
KServe v2 gRPC API plus Triton's extensions). A tensor arrives one of two ways:
  raw       `raw_input_contents[i]` holds input i's little-endian row-major bytes; when
            used, every input must come that way (tritonclient always sends raw);
  typed     `inputs[i].contents.<type>_contents` holds the values (`int_contents` for
            INT8/16/32, `uint_contents` for UINT8/16/32; FP16 has no typed field).
Responses always carry raw output bytes (`raw_output_contents`), as Triton's do.
Every malformed request raises `CodecError` (a ValueError) saying what was expected.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from .classification import OutputRequest, class_count, serialize_bytes
from .codec import DATATYPE_OF, DTYPES, CodecError, check_shape, refuse_shared_memory

# datatype -> the InferTensorContents field that holds its values
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def parameters_to_dict(params) -> dict[str, Any]:
    """map<string, InferParameter> -> {key: bool | int | str | float}."""
    out = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, kind) if kind is not None else None
    return out


def _typed_values(tensor, dtype: np.dtype, count: int) -> np.ndarray:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise CodecError(f"input {tensor.name!r}: {tensor.datatype} has no typed contents field; "
                         "send it in raw_input_contents")
    values = getattr(tensor.contents, field)
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise CodecError(f"input {tensor.name!r}: {tensor.datatype} values go in contents.{field}, got {others}")
    if len(values) != count:
        raise CodecError(f"input {tensor.name!r}: shape {list(tensor.shape)} needs {count} values, "
                         f"contents.{field} has {len(values)}")
    wide = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else
                      np.bool_ if dtype.kind == "b" else np.int64 if dtype.kind == "i" else np.uint64)
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        lo, hi = int(wide.min()), int(wide.max())
        if lo < info.min or hi > info.max:
            raise CodecError(f"input {tensor.name!r}: values {lo}..{hi} out of range for {tensor.datatype}")
    with np.errstate(over="ignore"):   # FP64 -> FP32 rounding, like the JSON path
        return wide.astype(dtype)


def decode_request(request, max_elements: int, max_batch: Optional[int] = None) -> tuple[dict[str, np.ndarray], list[OutputRequest], dict[str, Any]]:
    """ModelInferRequest -> ({input name: array}, requested outputs, parameters). Outputs
    always travel raw; one with parameters `classification` = k comes back as its top k."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise CodecError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                         "expected one per input, in the order of `inputs`")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in arrays:
            raise CodecError(f"input {name!r} appears twice; expected each input once")
        refuse_shared_memory(f"input {name!r}", parameters_to_dict(tensor.parameters),
                             "send its values in raw_input_contents (tritonclient: set_data_from_numpy)")
        dtype = DTYPES.get(tensor.datatype)
        if dtype is None:
            raise CodecError(f"input {name!r}: datatype {tensor.datatype!r} unsupported; expected one of {sorted(DTYPES)}")
        shape = [int(d) for d in tensor.shape]
        count = check_shape(shape, max_elements, name, max_batch)
        if raw:
            if tensor.HasField("contents"):
                raise CodecError(f"input {name!r}: raw_input_contents is used, so `contents` must be empty")
            blob = raw[i]
            if len(blob) != count * dtype.itemsize:
                raise CodecError(f"input {name!r}: raw contents must be {count * dtype.itemsize} bytes "
                                 f"({count} x {tensor.datatype}), got {len(blob)}")
            arrays[name] = np.frombuffer(blob, dtype=dtype, count=count).reshape(shape)
        else:
            arrays[name] = _typed_values(tensor, dtype, count).reshape(shape)
    requested = []
    for out in request.outputs:
        params = parameters_to_dict(out.parameters)
        refuse_shared_memory(f"output {out.name!r}", params, "its values come back in raw_output_contents")
        requested.append(OutputRequest(out.name, True, class_count(out.name, params)))
    return arrays, requested, parameters_to_dict(request.parameters)


def encode_response(model: str, request_id: Optional[str], impl: str,
                    outputs: list[tuple[str, np.ndarray]]):
    """[(name, array)] -> ModelInferResponse with raw little-endian output bytes."""
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=request_id or "")
    response.parameters["depthwise_impl"].string_param = impl
    for name, arr in outputs:
        if arr.dtype == object:   # BYTES (classification results)
            response.outputs.add(name=name, datatype="BYTES", shape=list(arr.shape))
            response.raw_output_contents.append(serialize_bytes(arr))
            continue
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        response.outputs.add(name=name, datatype=DATATYPE_OF[arr.dtype], shape=list(arr.shape))
        response.raw_output_contents.append(arr.tobytes())
    return response
