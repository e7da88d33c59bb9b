"""OIP v2 `/infer` for any ServedModel: JSON or binary tensors in, tensors out.

Request parameters read here: `depthwise_impl` (which impl runs), `binary_data_output`, and
Triton's `timeout` (int64 microseconds, tritonclient's `infer(..., timeout=)`): the request
waits at most that long for the model, else 503 and it never runs; 0 or absent = the server's
DWSERVE_REQUEST_TIMEOUT_S, which a request may shorten but not extend. Triton's `priority`
is accepted and ignored (one FIFO queue per model)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from pydantic import ValidationError

from .. import codec
from ..classification import OutputRequest, class_count, top_classes
from ..errors import ServiceError
from ..runtime import ModelRuntime, Result
from ..schemas import InferRequest


@dataclass
class Decoded:
    id: Optional[str]
    impl: str
    inputs: dict[str, np.ndarray]
    outputs: list[OutputRequest]      # name, as binary (REST), top-k classification or None
    timeout_us: Optional[int] = None  # the request's own wait limit, when shorter than the server's


def requested_timeout(value: Any, limit_s: float) -> Optional[int]:
    """Triton's `timeout` request parameter -> the microseconds this request may wait for the
    model, or None for the server's limit (absent, 0 as in Triton, or not shorter than limit_s).
    ValueError (a 400) for anything but a non-negative integer."""
    if value is None:
        return None
    if type(value) is not int or value < 0:      # bool is an int subclass: refused too
        raise ValueError(f"parameters.timeout: expected a non-negative integer of microseconds "
                         f"(0 = the server's limit), got {value!r}"[:300])
    return value if 0 < value < limit_s * 1e6 else None


def _validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]]
    return "invalid inference request: " + "; ".join(parts)


def _without_data(raw):
    if isinstance(raw, dict) and isinstance(raw.get("inputs"), list):
        inputs = [{k: v for k, v in t.items() if k != "data"} if isinstance(t, dict) else t for t in raw["inputs"]]
        for t, orig in zip(inputs, raw["inputs"]):
            if isinstance(orig, dict) and orig.get("data") is not None and not isinstance(orig["data"], list):
                raise ValueError(f"input {orig.get('name')!r}: data must be a list (flat or nested, row-major)")
        return {**raw, "inputs": inputs}
    return raw


class TensorHandler:
    def setup(self, runtime: ModelRuntime) -> "TensorHandler":
        self.rt = runtime
        self.settings = runtime.settings
        served = runtime.served
        self.inputs = {spec.name: spec for spec in served.inputs}
        self.outputs = {spec.name: spec for spec in served.outputs}
        self.vocab_size = (getattr(served, "metadata", None) or {}).get("vocab_size")
        return self

    def decode(self, body: bytes, header_length: Optional[str]) -> Decoded:
        head, tail = codec.split_body(body, header_length)
        raw = codec.parse_json(head, "inference request JSON")
        try:
            # Validate the structure without `data` (a 150k-element list would be copied by
            # pydantic for nothing); codec checks data element by element on its own.
            req = InferRequest.model_validate(_without_data(raw))
        except ValidationError as exc:
            raise ValueError(_validation_message(exc)) from None
        params = req.parameters or {}
        # `raw` has passed validation; decoding from it avoids copying large `data` lists again.
        arrays = codec.decode_inputs(raw, tail, self.settings.max_elements, self.settings.max_batch_size)
        binary_all = params.get("binary_data_output", False)
        if not isinstance(binary_all, bool):
            raise ValueError(f"parameters.binary_data_output: expected true/false, got {binary_all!r}")
        requested = []
        for out in req.outputs or ():
            out_params = out.parameters or {}
            codec.refuse_shared_memory(f"output {out.name!r}", out_params, "without it the output comes back in the "
                                       "response body (tritonclient: InferRequestedOutput without set_shared_memory)")
            binary = out_params.get("binary_data", binary_all)
            if not isinstance(binary, bool):
                raise ValueError(f"output {out.name!r}: parameters.binary_data must be true/false")
            requested.append(OutputRequest(out.name, binary, class_count(out.name, out_params)))
        return self.prepare(req.id, params.get("depthwise_impl"), arrays, requested, binary_all,
                            timeout=params.get("timeout"))

    def prepare(self, request_id: Optional[str], impl: Any, arrays: dict[str, np.ndarray],
                requested: list[OutputRequest], binary_all: bool = False, timeout: Any = None) -> Decoded:
        """Decoded tensors from either wire format (JSON/binary here, gRPC in service/grpc_codec.py)
        -> a checked request: the impl allowed, the inputs against the model's specs, the
        requested outputs known (none requested = all, each `binary_all`), the `timeout`
        parameter read (requested_timeout)."""
        timeout_us = requested_timeout(timeout, self.settings.request_timeout_s)
        impl = self.rt.check_impl(impl)
        self._check_inputs(arrays)
        seen = set()
        for out in requested:
            if out.name not in self.outputs:
                raise ValueError(f"requested output {out.name!r}: expected one of {sorted(self.outputs)}")
            if out.name in seen:   # answered twice, the client (results keyed by name) could not tell them apart
                raise ValueError(f"requested output {out.name!r} appears twice; request each output once")
            seen.add(out.name)
        wanted = requested or [OutputRequest(name, binary_all) for name in self.outputs]
        return Decoded(request_id, impl, arrays, wanted, timeout_us)

    def output_arrays(self, decoded: Decoded, result: Result) -> list[tuple[str, np.ndarray]]:
        """The requested outputs of a forward, each as computed or as its top-k classes."""
        labels = getattr(self.rt.served, "output_labels", None) or {}
        return [(out.name, result.outputs[out.name] if out.classes is None else
                 top_classes(result.outputs[out.name], out.classes, labels.get(out.name)))
                for out in decoded.outputs]

    def _check_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        """Names, dtypes, ranks and fixed dims against the model's TensorSpecs; value limits."""
        if set(arrays) != set(self.inputs):
            raise ValueError(f"inputs: expected exactly {sorted(self.inputs)}, got {sorted(arrays)}")
        rows = None
        for name, arr in arrays.items():
            spec = self.inputs[name]
            want_dtype = codec.DTYPES.get(spec.datatype)
            if arr.dtype != want_dtype:
                raise ValueError(f"input {name!r}: expected datatype {spec.datatype}, got {codec.DATATYPE_OF.get(arr.dtype, arr.dtype)}")
            if arr.ndim != len(spec.shape) or any(w != -1 and w != d for w, d in zip(spec.shape, arr.shape)):
                raise ValueError(f"input {name!r}: expected shape {list(spec.shape)} (-1 = any), got {list(arr.shape)}")
            if arr.shape[0] < 1 or arr.shape[0] > self.settings.max_batch_size:
                raise ValueError(codec.batch_error(name, list(arr.shape), self.settings.max_batch_size))
            for axis, (w, d) in enumerate(zip(spec.shape[1:], arr.shape[1:]), start=1):
                if w == -1 and not 1 <= d <= self.settings.max_sequence_length:
                    raise ValueError(f"input {name!r}: dimension {axis} must be 1..{self.settings.max_sequence_length} "
                                     f"(DWSERVE_MAX_SEQUENCE_LENGTH), got {d}")
            if rows is not None and arr.shape[0] != rows:
                raise ValueError(f"inputs: all inputs need the same batch dimension, got {rows} and {arr.shape[0]}")
            rows = arr.shape[0]
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"input {name!r}: values must be finite (no NaN/Inf)")
            if self.vocab_size and arr.dtype.kind in "iu" and arr.size:
                lo, hi = int(arr.min()), int(arr.max())
                if lo < 0 or hi >= self.vocab_size:
                    raise ValueError(f"input {name!r}: token ids must be in [0, {self.vocab_size}), got {lo}..{hi}")

    async def predict(self, decoded: Decoded) -> Result:
        if decoded.timeout_us is None:
            return await self.rt.infer(decoded.inputs, decoded.impl)
        try:
            return await self.rt.infer(decoded.inputs, decoded.impl, decoded.timeout_us / 1e6)
        except (TimeoutError, asyncio.TimeoutError):      # the future was cancelled: it never runs
            raise ServiceError(503, f"request timeout expired: the model did not answer within the request's "
                                    f"parameters.timeout ({decoded.timeout_us} us); retry later or allow longer",
                               {"Retry-After": "1"}) from None

    def encode(self, decoded: Decoded, result: Result) -> tuple[bytes, dict[str, str]]:
        header: dict[str, Any] = {"model_name": self.rt.name, "model_version": "1",
                                  "parameters": {"depthwise_impl": decoded.impl}}
        if decoded.id is not None:
            header["id"] = decoded.id
        arrays = self.output_arrays(decoded, result)
        body, json_len = codec.encode_outputs([(name, arr, out.binary) for (name, arr), out
                                               in zip(arrays, decoded.outputs)], header)
        headers = {"server-timing": server_timing(result)}
        if json_len is None:
            return body, {**headers, "content-type": "application/json"}
        return body, {**headers, "content-type": "application/octet-stream",
                      "inference-header-content-length": str(json_len)}


def server_timing(result: Result) -> str:
    """W3C Server-Timing (ms): lets clients and benchmarks split latency without /metrics."""
    return (f"queue;dur={result.queue_s * 1e3:.3f}, compute;dur={result.compute_s * 1e3:.3f}, "
            f'batch;desc="{result.batch_rows}"')
