"""What both front ends say about a model, built once as JSON for REST and parsed into the
protos for gRPC (the JSON's field names are the protos'): the OIP model metadata, and Triton's
model-configuration, statistics and model-repository extensions (`GET /v2/models/{m}/config`,
`GET /v2/models[/{m}]/stats`, `POST /v2/repository/index`; gRPC `ModelConfig`,
`ModelStatistics`, `RepositoryIndex`), which tritonclient's get_model_config /
get_inference_statistics / get_model_repository_index read over either protocol.

The repository is fixed at start (`--model`), like Triton's model control mode NONE: the
index lists every served model and its state; `load` of a served model is a no-op once it
is ready (its weights are the ones it started with), and `unload` or a load that brings a
config or files is a 400 saying so.
"""
from __future__ import annotations

from typing import Optional

from .errors import ServiceError, unknown_model

EXTENSIONS = ["binary_tensor_data", "classification", "parameters", "model_configuration", "statistics",
              "model_repository", "generate"]
_FIXED = "dwserve serves the models chosen at start (dwserve serve --model NAME[=PATH]); restart it to change them"


# Triton's REST extensions dwserve does not serve (not in EXTENSIONS) -> why, and what to do
# instead: the same reasons gRPC gives as UNIMPLEMENTED (service/grpc_server.py). A 400 that
# says so, as repository unload's: a bare 404 'Not Found' read as a mistyped URL, and
# tritonclient's examples call the shared-memory ones routinely (status, cleanup).
SHARED_MEMORY = ("{kind} shared memory (Triton's extension) is not served by dwserve; send tensors in the "
                 "request body: the binary tensor extension (tritonclient's set_data_from_numpy with "
                 "binary_data=True, its default) or JSON 'data'")
UNSERVED = {
    "trace": "tracing (Triton's trace extension) is not served by dwserve; its timings are the Prometheus "
             "metrics (GET /metrics) and each infer response's Server-Timing header",
    "logging": "log settings (Triton's logging extension) are not served by dwserve; set --log-level "
               "(DWSERVE_LOG_LEVEL) and --log-format at start",
}


# gRPC's text interface of the generate model (service/grpc_generate.py: a ModelInfer or
# ModelStreamInfer request with text_input generates text), listed over gRPC beside the
# tensor interface, as a Triton vLLM model's config lists it: perf_analyzer and genai-perf
# build their requests from the metadata and config. Every input is optional (Triton's
# `optional`), input_ids too: a request sends one interface's. Shapes [-1, 1]: one value per
# request (max_batch_size > 0 puts the batch dim first; a generation takes batch 1).
TEXT_INPUTS = (("text_input", "BYTES"), ("stream", "BOOL"), ("sampling_parameters", "BYTES"),
               ("exclude_input_in_output", "BOOL"), ("max_tokens", "INT32"))
TEXT_OUTPUT = ("text_output", "BYTES")


def _config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"   # model_config.proto's names


def serves_text(svc, name: str) -> bool:
    """Whether gRPC requests to `name` may generate text: the generate model, with a tokenizer."""
    return name == svc.generate_model and getattr(svc.generate, "tokenizer", None) is not None


def metadata_of(name: str, rt, text: bool = False) -> dict:
    """OIP v2 model metadata; `parameters` (the served model's scalars, the default impl and
    batch limit) is REST's only: the gRPC message has no such field. text: with gRPC's text
    interface (TEXT_INPUTS)."""
    served = rt.served
    spec = lambda s: {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}  # noqa: E731
    meta = {k: v for k, v in (getattr(served, "metadata", None) or {}).items() if isinstance(v, (int, float, str, bool))}
    inputs, outputs = [spec(s) for s in served.inputs], [spec(s) for s in served.outputs]
    if text:
        inputs += [{"name": n, "datatype": d, "shape": [-1, 1]} for n, d in TEXT_INPUTS]
        outputs.append({"name": TEXT_OUTPUT[0], "datatype": TEXT_OUTPUT[1], "shape": [-1, 1]})
    return {"name": name, "versions": ["1"], "platform": "pytorch", "inputs": inputs, "outputs": outputs,
            "parameters": {**meta, "depthwise_impl": rt.settings.depthwise_impl,
                           "max_batch_size": rt.settings.max_batch_size}}


def model_config(name: str, rt, text: bool = False) -> dict:
    """The served model as a Triton model config: the batch dim is implicit (max_batch_size),
    so dims are the per-row shape (-1 = variable). text: as metadata_of's, every input optional."""
    s, served = rt.settings, rt.served

    def tensor(name, datatype, dims):
        return {"name": name, "data_type": _config_type(datatype), "dims": dims, **({"optional": True} if text else {})}

    inputs = [tensor(t.name, t.datatype, list(t.shape[1:])) for t in served.inputs]
    outputs = [{"name": t.name, "data_type": _config_type(t.datatype), "dims": list(t.shape[1:])} for t in served.outputs]
    if text:
        inputs += [tensor(n, d, [1]) for n, d in TEXT_INPUTS]
        outputs.append({"name": TEXT_OUTPUT[0], "data_type": _config_type(TEXT_OUTPUT[1]), "dims": [1]})
    return {"name": name, "platform": "pytorch", "backend": "dwserve", "max_batch_size": s.max_batch_size,
            "input": inputs, "output": outputs,
            "dynamic_batching": {"max_queue_delay_microseconds": int(s.max_queue_delay_ms * 1000)},
            "version_policy": {"latest": {"num_versions": 1}},
            "parameters": {"depthwise_impl": {"string_value": s.depthwise_impl}}}


def model_stats(svc, name: Optional[str]) -> dict:
    """{"model_stats": [...]} for one model, or every loaded one when name is None."""
    if name:
        return {"model_stats": [svc.runtime(name).statistics.to_json(name)]}
    return {"model_stats": [rt.statistics.to_json(n) for n, rt in svc.runtimes.items() if rt.ready]}


def repository_index(svc, ready_only: bool = False) -> list[dict]:
    """Every served model with its state: READY, LOADING (still building or warming up) or
    UNAVAILABLE (loading failed; `reason` says why). ready_only keeps the READY ones."""
    rows = []
    for name in svc.model_names:
        rt = svc.runtimes.get(name)
        if rt is not None and rt.ready:
            state, reason = "READY", ""
        elif svc.load_error is not None:
            state, reason = "UNAVAILABLE", svc.load_error
        else:
            state, reason = "LOADING", ""
        if state == "READY" or not ready_only:
            rows.append({"name": name, "version": "1", "state": state, "reason": reason})
    return rows


def repository_load(svc, name: str, parameters: dict) -> None:
    """Triton's load: for a served model without overrides, done once it is ready."""
    if name not in svc.model_names:
        raise ServiceError(404, f"{unknown_model(name, svc.model_names).message} ({_FIXED})")
    if parameters:
        named = ", ".join(repr(k[:40]) for k in sorted(parameters)[:4])
        raise ServiceError(400, f"load parameters unsupported ({len(parameters)}: {named}"
                                f"{', ...' if len(parameters) > 4 else ''}): {_FIXED}")
    svc.runtime(name)   # 503 + Retry-After while it is still loading


def repository_unload(svc, name: str) -> None:
    if name not in svc.model_names:
        raise unknown_model(name, svc.model_names)
    raise ServiceError(400, f"unloading {name!r} is unsupported: {_FIXED}")


def to_proto(message_cls, data: dict):
    """The same content as a protobuf message (tritonclient's generated classes); fields the
    message lacks are left out."""
    from google.protobuf.json_format import ParseDict
    return ParseDict(data, message_cls(), ignore_unknown_fields=True)
