"""OIP v2 tensors <-> numpy: JSON `data` and the binary tensor extension.

Binary extension (Triton's, which tritonclient speaks):
  request  body = JSON header (its length in the `Inference-Header-Content-Length` HTTP
           header) followed by the raw little-endian bytes of every input whose
           `parameters.binary_data_size` is set, in the order those inputs appear.
  response the same layout when any output is requested with `parameters.binary_data`
           (or request `parameters.binary_data_output`); otherwise plain JSON.
Everything here is pure (no FastAPI, no torch) so it is fuzzable on its own; every
malformed input raises `CodecError` (a ValueError) whose message says what was expected.
"""
from __future__ import annotations

import json
import math
import zlib
from typing import Any, Optional

import numpy as np

from .classification import serialize_bytes
from .errors import ServiceError


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is infinity when parsed as double")
    return value


def _stdlib_loads(raw):
    """The stdlib parser, as strict as orjson (which refuses NaN/Infinity, and numbers like
    1e400 that overflow a double, too)."""
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)


try:   # 5x faster than json on the 3 MB body of a JSON image request (18 vs 97 ms on 2 cores)
    from orjson import loads as _loads
except ImportError:   # a dependency, but the codec does not break without it
    _loads = _stdlib_loads

# KServe v2 datatypes we accept as numeric tensors. BYTES/BF16 have no numpy twin that
# any served model takes, so they are rejected with a clear message instead.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPE_OF = {dt: name for name, dt in DTYPES.items()}


class CodecError(ValueError):
    """Malformed tensor payload; the message is returned to the client as a 400."""


def parse_json(raw: bytes, what: str = "request body") -> Any:
    """Strict JSON (no NaN/Infinity literals: JSON has none) -> Python objects."""
    try:
        return _loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nesting attack
        raise CodecError(f"{what}: expected valid UTF-8 JSON ({type(exc).__name__}: {exc})"[:300]) from None


# HTTP content codings (RFC 9110 8.4.1) -> the one each is (x-gzip is gzip), and zlib's
# wbits for it: HTTP "deflate" is the zlib format (15), gzip is 31. Request bodies are decoded
# here (decompress); replies are encoded by service/compression.py from the same table.
CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
WBITS = {"gzip": 31, "deflate": 15}


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A request body as sent with `Content-Encoding: encoding` (lower-cased) -> its bytes,
    decoded whole and at most `limit` long: more is a 413 (a zip bomb), an encoding other than
    gzip or deflate (zlib, RFC 9110) a 415, and a damaged stream a 400. Whole: a stream must
    reach its end (a gzip one is only checked, CRC-32 and length, there), a gzip body of
    several members (RFC 1952: `cat a.gz b.gz`) is all of them, and nothing may follow."""
    if encoding in ("", "identity"):
        return body
    kind = CODINGS.get(encoding)
    if kind is None:
        raise ServiceError(415, f"Content-Encoding {encoding[:40]!r} unsupported; expected gzip, deflate or none")
    pieces, size, rest = [], 0, body
    while True:
        stream = zlib.decompressobj(WBITS[kind])
        try:
            piece = stream.decompress(rest, limit + 1 - size)   # >= 1: 0 would mean no bound
        except zlib.error as exc:
            raise CodecError(f"body: invalid {kind} data ({exc})") from None
        size += len(piece)
        if size > limit:
            raise ServiceError(413, f"decompressed body exceeds the limit of {limit} bytes (DWSERVE_MAX_BODY_BYTES)")
        pieces.append(piece)
        if not stream.eof:
            raise CodecError(f"body: {kind} data truncated: it ends before the end of its stream")
        rest = stream.unused_data
        if not rest:
            return b"".join(pieces)
        if kind == "deflate" or not rest.startswith(b"\x1f\x8b"):   # gzip's magic: another member
            raise CodecError(f"body: {len(rest)} unexpected bytes after the {kind} stream")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """-> (json_header, binary_tail). No header means the whole body is JSON."""
    if header_length is None:
        return body, b""
    # ASCII digits only: int() would also take "+34", " 34", "3_4" and other scripts' digits.
    if not (header_length.isascii() and header_length.isdigit()):
        raise CodecError(f"Inference-Header-Content-Length: expected a decimal integer (ASCII digits "
                         f"only), got {header_length[:40]!r}")
    n = int(header_length) if len(header_length) <= 18 else None   # more digits: past any body
    if n is None or not 0 < n <= len(body):
        shown = header_length if n is not None else header_length[:20] + "..."
        raise CodecError(f"Inference-Header-Content-Length: expected 1..{len(body)} (the body size), got {shown}")
    return body[:n], body[n:]


def batch_error(name: str, shape: list[int], limit: int) -> str:
    """The refusal of a batch dimension (shape[0]) outside 1..limit, the same from every front
    end (REST JSON/binary, gRPC; codec before allocating, TensorHandler after)."""
    rows, unit = shape[0], "images" if len(shape) == 4 else "rows"   # NCHW: one image per row
    if rows < 1:
        return f"input {name!r}: batch dimension must be 1..{limit} (DWSERVE_MAX_BATCH_SIZE), got {rows}"
    return (f"input {name!r}: {rows} {unit}, at most {limit} per request: batch dimension must be 1..{limit} "
            f"(--max-batch-size, DWSERVE_MAX_BATCH_SIZE); send at most {limit} {unit} per request")


def check_shape(shape: list[int], max_elements: int, name: str, max_batch: Optional[int] = None) -> int:
    """Validate a declared shape before allocating anything; -> element count. max_batch: the
    batch limit of shape[0], checked first: 9 images over a limit of 8 are also over the
    element limit (8 images' worth by default), which named a setting that was not the cause.

    Each dimension is bounded too, not only the product: with a 0 anywhere the product is 0
    whatever the others are, and numpy then refuses [0, 2**63] with an error naming no input."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise CodecError(f"input {name!r}: shape must be a list of integers, got {shape!r}"[:300])
    if any(d < 0 for d in shape):
        raise CodecError(f"input {name!r}: shape dimensions must be >= 0, got {shape}"[:300])
    if max_batch is not None and shape and shape[0] > max_batch:
        raise CodecError(batch_error(name, shape, max_batch))
    nonzero = math.prod(d for d in shape if d)
    if nonzero > max_elements:
        if 0 in shape:
            raise CodecError(f"input {name!r}: shape {shape} has a dimension over the limit; each dimension, and "
                             f"the product of the non-zero ones, must be at most {max_elements} "
                             "(DWSERVE_MAX_ELEMENTS)"[:400])
        raise CodecError(f"input {name!r}: shape {shape} has {nonzero} elements; the limit is {max_elements} "
                         "(DWSERVE_MAX_ELEMENTS)"[:400])
    return math.prod(shape)


def _has_bool(data: list, arr: np.ndarray) -> bool:
    """Any true/false among the values of a (nested, already rectangular) list, `arr` being
    np.asarray(data): numpy reads [1.5, true] as [1.5, 1.0]. Only the values numpy holds as
    0 or 1 can have been booleans, so only those are looked up in the Python list (scanning
    every value cost as much as np.asarray itself on an image)."""
    candidates = np.flatnonzero((arr == 0) | (arr == 1))
    if candidates.size > arr.size // 4:                     # mostly 0/1 (a mask): scan it all
        return _scan_bool(data)
    if arr.ndim == 1:
        return any(type(data[i]) is bool for i in candidates.tolist())
    for index in zip(*np.unravel_index(candidates, arr.shape)):
        value = data
        for i in index:
            value = value[i]
        if type(value) is bool:
            return True
    return False


def _scan_bool(data: list) -> bool:
    if data and isinstance(data[0], list):
        return any(_scan_bool(row) for row in data)
    return bool in map(type, data)


def _json_to_array(data: Any, dtype: np.dtype, shape: list[int], name: str) -> np.ndarray:
    """JSON `data` (flat, or nested exactly as `shape`: the OIP's two forms) -> array."""
    datatype = DATATYPE_OF[dtype]
    try:
        arr = np.asarray(data)  # ragged nesting raises ValueError here
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"input {name!r}: data must be a (possibly nested) list of numbers: {exc}"[:300]) from None
    if arr.ndim > 1 and list(arr.shape) != shape:
        raise CodecError(f"input {name!r}: nested data has shape {list(arr.shape)}, expected the declared shape "
                         f"{shape} (or a flat list of {math.prod(shape)} values, row-major)"[:300])
    kind = arr.dtype.kind
    if kind == "O" and arr.size and dtype.kind in "iuf":
        # Python ints past 64 bits (the stdlib parser; orjson gives floats for them, below)
        values = arr.reshape(-1).tolist()
        if all(type(v) is int for v in values) and dtype.kind in "iu":
            raise CodecError(f"input {name!r}: values {min(values)}..{max(values)} out of range for {datatype}"[:300])
        if all(type(v) in (int, float) for v in values):
            arr, kind = np.asarray(values, dtype=np.float64).reshape(arr.shape), "f"
    if arr.size and kind not in "biuf":
        got = "strings" if kind in "US" else "null, objects or other non-numbers"   # not numpy's 'str672'
        raise CodecError(f"input {name!r}: data must be numbers for {datatype}, got {got}")
    if dtype.kind == "b":
        if arr.size and kind != "b":
            raise CodecError(f"input {name!r}: BOOL data must be true/false")
    elif arr.size and (kind == "b" or _has_bool(data, arr)):
        raise CodecError(f"input {name!r}: {datatype} data must be numbers, got true/false; "
                         "booleans are for BOOL inputs")
    if dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if kind == "f":
            # orjson reads an integer literal past 64 bits as a float: say it is out of range,
            # not a float. -2**63 - 1 reads as -2.0**63, which equals INT64's min: an integer
            # literal in range would have been read as an int, so that float is one past it.
            integral = bool(np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)))
            lo, hi = float(arr.min()), float(arr.max())
            if not integral or (info.min <= lo and hi <= info.max and lo > -2.0**63):
                raise CodecError(f"input {name!r}: {datatype} data must be integers, got floats")
            worst = lo if lo < info.min or lo <= -2.0**63 else hi
            raise CodecError(f"input {name!r}: values out of range for {datatype} ({info.min}..{info.max}): an "
                             f"integer past it (read as about {worst:.4g})")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise CodecError(f"input {name!r}: values {lo}..{hi} out of range for {datatype}")
    if arr.size != math.prod(shape):
        raise CodecError(f"input {name!r}: shape {shape} needs {math.prod(shape)} values, data has {arr.size}")
    with np.errstate(over="ignore"):
        return arr.astype(dtype, copy=False).reshape(shape)


def refuse_shared_memory(what: str, params: dict, instead: str) -> None:
    """A tensor placed in shared memory (Triton's extension: parameters shared_memory_region,
    _byte_size, _offset), which dwserve does not serve: a 400 saying so. Unchecked, an input's
    was read as a forgotten tensor and an output's was ignored, the output answered in the body
    while the client read its region's stale bytes as the result."""
    if any(str(key).startswith("shared_memory_") for key in params):
        raise CodecError(f"{what}: parameters.shared_memory_region: shared memory (Triton's extension) is not "
                         f"served by dwserve; {instead}")


def decode_inputs(request: dict, tail: bytes, max_elements: int, max_batch: Optional[int] = None) -> dict[str, np.ndarray]:
    """Validated OIP v2 request (schemas.InferRequest as dict) + binary tail -> {name: array}."""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request["inputs"]:
        name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
        if name in arrays:
            raise CodecError(f"input {name!r} appears twice; expected each input once")
        if datatype not in DTYPES:
            raise CodecError(f"input {name!r}: datatype {datatype!r} unsupported; expected one of {sorted(DTYPES)}")
        dtype = DTYPES[datatype]
        count = check_shape(shape, max_elements, name, max_batch)
        params = tensor.get("parameters") or {}
        refuse_shared_memory(f"input {name!r}", params, "send the tensor in the body: 'data', or binary_data_size and "
                             "its bytes after the JSON (tritonclient: set_data_from_numpy, not set_shared_memory)")
        size = params.get("binary_data_size")
        if size is not None:
            if tensor.get("data") is not None:
                raise CodecError(f"input {name!r}: give either 'data' or parameters.binary_data_size, not both")
            if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
                raise CodecError(f"input {name!r}: binary_data_size must be {count * dtype.itemsize} "
                                 f"({count} x {DATATYPE_OF[dtype]}), got {size!r}")
            if offset + size > len(tail):
                raise CodecError(f"input {name!r}: binary data truncated: need {size} bytes at offset {offset}, "
                                 f"body has {len(tail)} after the JSON header")
            arrays[name] = np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            if tensor.get("data") is None:
                raise CodecError(f"input {name!r}: expected 'data' or parameters.binary_data_size")
            arrays[name] = _json_to_array(tensor["data"], dtype, shape, name)
    if offset != len(tail):
        raise CodecError(f"{len(tail) - offset} unexpected bytes after the binary inputs; "
                         "check Inference-Header-Content-Length and binary_data_size")
    return arrays


def encode_outputs(outputs: list[tuple[str, np.ndarray, bool]], header: dict) -> tuple[bytes, int | None]:
    """[(name, array, as_binary)] + response fields -> (body, json_length or None).

    json_length is None for a plain JSON body; otherwise it goes into the
    Inference-Header-Content-Length response header and binary data follows the JSON.
    """
    entries, blobs = [], []
    for name, arr, binary in outputs:
        if arr.dtype == object:   # BYTES (classification results): elements are bytes
            entry = {"name": name, "datatype": "BYTES", "shape": list(arr.shape)}
            blob = serialize_bytes(arr) if binary else None
            data = None if binary else [x.decode("utf-8", "replace") for x in arr.reshape(-1)]
        else:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))  # wire format is little-endian
            entry = {"name": name, "datatype": DATATYPE_OF[arr.dtype], "shape": list(arr.shape)}
            blob = arr.tobytes() if binary else None
            data = None if binary else arr.reshape(-1).tolist()
        if binary:
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        entries.append(entry)
    text = json.dumps({**header, "outputs": entries}, allow_nan=True).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)
