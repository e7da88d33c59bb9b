"""Closed-loop gRPC load for the serving benchmark: the twin of http_load.run_load over OIP v2
gRPC (`--grpc-port`). `clients` threads, each with its own channel, send the same pre-built
ModelInferRequest back to back through the generated stub (no tritonclient wrapper in the
loop: its per-call Python would land in the latency); the `server-timing` trailer gives
queue and compute time like REST's Server-Timing header, so stats come out in the same
shape (http_load.summarize).

    stats = run_grpc_load("127.0.0.1:8001", grpc_infer_request("mobilenet_v2", image),
                          clients=1, duration=20, warmup=4)
"""
from __future__ import annotations

import contextlib

import numpy as np

from benchmarks.http_load import NO_ANSWER, closed_loop, summarize

# HTTP status a gRPC outcome counts as in the records (summarize keeps 200s).
_STATUS = {"OK": 200, "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "NOT_FOUND": 404,
           "RESOURCE_EXHAUSTED": 413, "UNAVAILABLE": 503}


def grpc_infer_request(model: str, arr: np.ndarray, impl: str | None = None):
    """-> one ModelInferRequest (raw little-endian input bytes, as tritonclient sends them)."""
    from tritonclient.grpc import service_pb2 as pb

    name, dtype = ("input", "FP32") if model == "mobilenet_v2" else ("input_ids", "INT64")
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=dtype, shape=list(arr.shape))
    request.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    if impl:
        request.parameters["depthwise_impl"].string_param = impl
    return request


def no_answer(exc) -> bool:
    """UNAVAILABLE because the channel could not connect (no server on the port, or one
    restarting), not a server's own UNAVAILABLE (a full queue sheds with 503's twin)."""
    details = (exc.details() or "").lower()
    return exc.code().name == "UNAVAILABLE" and any(
        w in details for w in ("failed to connect", "connection refused", "connection reset"))


def run_grpc_load(target: str, request, clients: int, duration: float, warmup: float) -> dict:
    """Stats over the measured window only (after `warmup` seconds), as http_load.run_load."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    limit = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]

    @contextlib.contextmanager
    def sender():
        with grpc.insecure_channel(target, options=limit) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer

            def send():
                try:
                    _, call = infer.with_call(request, timeout=120)
                except grpc.RpcError as exc:
                    if no_answer(exc):
                        return NO_ANSWER, ""   # closed_loop backs off, as for REST
                    return _STATUS.get(exc.code().name, 500), ""
                return 200, dict(call.trailing_metadata() or ()).get("server-timing", "")
            yield send

    return summarize(*closed_loop(sender, clients, duration, warmup), clients)
