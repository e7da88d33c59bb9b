"""gRPC's call limit (--grpc-max-concurrent-rpcs), against the in-process server with fake models."""
import pytest

pytest.importorskip("tritonclient.grpc")

from tests.grpc_fake_server import grpc_server  # noqa: E402


def test_grpc_calls_past_the_limit_are_resource_exhausted():
    """--grpc-max-concurrent-rpcs: grpc buffered MiBs for every open stream before dwserve read
    any (800 silent streams: RSS +450 MiB and rising); past the limit a call is refused at once."""
    import queue
    import threading

    import grpc
    from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc as pbg

    request = pb.ModelInferRequest(model_name="lfm2")
    tensor = request.inputs.add(name="input_ids", datatype="INT64", shape=[1, 1])
    tensor.contents.int64_contents.append(1)
    with grpc_server(grpc_max_concurrent_rpcs=2) as (target, _, _), grpc.insecure_channel(target) as channel:
        stub = pbg.GRPCInferenceServiceStub(channel)
        gates = [queue.Queue() for _ in range(2)]
        streams = [stub.ModelStreamInfer(iter(gate.get, None)) for gate in gates]   # open, sending nothing yet
        for gate, stream in zip(gates, streams):   # each answers once: both are running
            gate.put(pb.ModelInferRequest(model_name="lfm2", inputs=request.inputs))
            assert next(stream).infer_response.outputs[0].name == "logits"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for gate in gates:
            gate.put(None)   # the streams end
        for stream in streams:
            assert list(stream) == []
        deadline = threading.Event()
        for _ in range(50):   # the server counts them ended
            try:
                assert stub.ModelInfer(request, timeout=10).outputs[0].name == "logits"
                break
            except grpc.RpcError:
                deadline.wait(0.1)
        else:
            pytest.fail("calls still refused after the streams ended")
