"""OIP v2 over gRPC (service/grpc_server.py) with tritonclient.grpc against uvicorn in this
process (fake models): health and metadata as on REST, infer equal to the reference and to
REST, the request-id trailer, errors as gRPC status codes, the bidirectional stream, and
fuzzed messages. Load and limits are tests/test_grpc_load_and_limits.py, Triton's extensions
tests/test_grpc_triton_extensions.py; the codec is tests/test_grpc_codec.py; the real models
over gRPC are in test_service_server.py."""
import threading

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.testing import reference_logits  # noqa: E402
from tests import grpc_fake_server  # noqa: E402
from tests.grpc_fake_server import _code_and_message, _image, _infer  # noqa: E402
from tests.test_grpc_codec import _fuzzed_request, _tensor  # noqa: E402

served = grpc_fake_server.served   # this module's server: fake models, max_batch_size=4


def test_health_and_metadata_match_rest(served):
    target, url, _ = served
    client = gc.InferenceServerClient(target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("lfm2") and client.is_model_ready("mobilenet_v2", model_version="1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "dwserve" and "binary_tensor_data" in meta["extensions"]
    for model in ("lfm2", "mobilenet_v2"):
        got = client.get_model_metadata(model, as_json=True)
        rest = httpx.get(f"{url}/v2/models/{model}").json()
        for key in ("inputs", "outputs"):   # gRPC lists lfm2's text interface after (test_grpc_text_interface.py)
            assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in got[key]][:len(rest[key])] == \
                   [(t["name"], t["datatype"], t["shape"]) for t in rest[key]]
    # not served: not ready, as Triton answers (it raised NOT_FOUND: is_model_ready could not say False)
    assert not client.is_model_ready("nope") and not client.is_model_ready("lfm2", model_version="2")
    for call, args in ((client.get_model_metadata, ("nope",)), (client.get_model_metadata, ("lfm2", "2"))):
        with pytest.raises(InferenceServerException) as err:
            call(*args)
        assert err.value.status() == "StatusCode.NOT_FOUND" and "expected" in err.value.message()


def test_infer_equals_reference_and_rest(served):
    target, url, models = served
    client = gc.InferenceServerClient(target)
    rng = np.random.default_rng()
    x = _image(rng, rows=2)
    result = _infer(client, "mobilenet_v2", x, parameters={"depthwise_impl": "native"}, request_id="q1")
    want = reference_logits(torch.from_numpy(x), models["mobilenet_v2"].weight).numpy()
    np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response.id == "q1" and response.parameters["depthwise_impl"].string_param == "native"
    assert response.model_name == "mobilenet_v2" and response.model_version == "1"
    # The same ids over gRPC and REST give the same logits (one batcher, one handler).
    ids = rng.integers(0, 96, size=(1, 9)).astype(np.int64)
    over_grpc = _infer(client, "lfm2", ids, "INT64").as_numpy("logits")
    body = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 9], "data": ids.reshape(-1).tolist()}]}
    over_rest = np.asarray(httpx.post(f"{url}/v2/models/lfm2/infer", json=body).json()["outputs"][0]["data"])
    assert over_grpc.shape == (1, 96)
    np.testing.assert_allclose(over_grpc.reshape(-1), over_rest, rtol=1e-6, atol=1e-6)


def test_request_id_trailer(served):
    target, _, _ = served
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    x = _image(np.random.default_rng())
    inp = gc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    request = _get_inference_request("mobilenet_v2", [inp], "", "", None, 0, False, False, 0, None, None)
    _, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "trace-7"),), timeout=30)
    trailers = dict(call.trailing_metadata())
    assert trailers["x-request-id"] == "trace-7" and "compute;dur=" in trailers["server-timing"]
    _, call = stub.ModelInfer.with_call(request, timeout=30)
    assert len(dict(call.trailing_metadata())["x-request-id"]) == 32
    request.model_name = "nope"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=(("x-request-id", "trace-8"),), timeout=30)
    assert dict(err.value.trailing_metadata())["x-request-id"] == "trace-8"


def test_bad_requests_are_status_codes_and_the_server_stays_up(served):
    target, url, _ = served
    client = gc.InferenceServerClient(target)
    x = _image(np.random.default_rng())
    cases = [
        (lambda: _infer(client, "nope", x), "NOT_FOUND", "unknown model"),
        (lambda: _infer(client, "mobilenet_v2", x, parameters={"depthwise_impl": "fastest"}),
         "INVALID_ARGUMENT", "depthwise_impl: expected one of"),
        (lambda: _infer(client, "mobilenet_v2", x[:, :2].copy()), "INVALID_ARGUMENT", "expected shape [-1, 3, 224, 224]"),
        (lambda: _infer(client, "mobilenet_v2", x.astype(np.float64), "FP64"), "INVALID_ARGUMENT", "expected datatype FP32"),
        (lambda: _infer(client, "mobilenet_v2", np.repeat(x, 5, axis=0)), "INVALID_ARGUMENT", "batch dimension must be 1..4"),
        (lambda: _infer(client, "lfm2", np.array([[1, 500]], dtype=np.int64), "INT64"),
         "INVALID_ARGUMENT", "token ids must be in [0, 96)"),
        (lambda: _infer(client, "mobilenet_v2", x, outputs=[gc.InferRequestedOutput("probs")]),
         "INVALID_ARGUMENT", "requested output 'probs'"),
        (lambda: _infer(client, "mobilenet_v2", x, model_version="3"), "NOT_FOUND", "expected '1'"),
    ]
    for call, code, message in cases:
        got_code, got_message = _code_and_message(call)
        assert got_code == f"StatusCode.{code}" and message in got_message, (code, message, got_message)
    assert client.is_server_live() and client.is_server_ready()
    metrics = httpx.get(f"{url}/metrics").text
    assert 'dwserve_requests_total{impl="auto",model="unknown",status="404"}' in metrics
    assert 'model="mobilenet_v2",status="400"}' in metrics


def test_stream_answers_every_request_in_any_order(served):
    target, _, models = served
    client = gc.InferenceServerClient(target)
    rng = np.random.default_rng()
    answers, lock, all_in = {}, threading.Lock(), threading.Event()
    images = {f"r{i}": _image(rng) for i in range(7)}

    def callback(result, error):
        with lock:
            key = result.get_response().id if result is not None else f"error{len(answers)}"
            answers[key] = result.as_numpy("logits") if result is not None else error
            if len(answers) == len(images) + 1:
                all_in.set()

    client.start_stream(callback=callback)
    try:
        for i, (rid, x) in enumerate(images.items()):
            inp = gc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("mobilenet_v2", [inp], request_id=rid,
                                      parameters={"depthwise_impl": "slice_sum"})
            if i == 3:   # a bad request mid-stream is answered with an error; the stream goes on
                client.async_stream_infer("mobilenet_v2", [inp], request_id="bad",
                                          parameters={"depthwise_impl": "nope"})
        assert all_in.wait(30), sorted(answers)
    finally:
        client.stop_stream()
    errors = [v for k, v in answers.items() if k.startswith("error")]
    assert len(errors) == 1 and "depthwise_impl" in str(errors[0])
    for rid, x in images.items():
        want = reference_logits(torch.from_numpy(x), models["mobilenet_v2"].weight).numpy()
        np.testing.assert_allclose(answers[rid], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method, message_type", [("ModelInfer", "ModelInferRequest"),
                                                  ("ServerLive", "ServerLiveRequest"),
                                                  ("ModelMetadata", "ModelMetadataRequest")])
def test_a_message_protobuf_cannot_parse_is_invalid_argument(served, method, message_type):
    """grpc parses before the servicer runs: its DecodeError was UNKNOWN with a traceback logged
    at ERROR (service/grpc_decode.py); the server serves on."""
    target, _, _ = served
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert f"not a valid inference.{message_type} message" in err.value.details(), err.value.details()
        assert call(pb.ServerLiveRequest().SerializeToString() if method == "ServerLive" else
                    pb.ModelMetadataRequest(name="lfm2").SerializeToString() if method == "ModelMetadata" else
                    _ids_request("ok").SerializeToString(), timeout=10)


def _ids_request(rid):
    request = pb.ModelInferRequest(model_name="lfm2", id=rid)
    tensor = request.inputs.add(name="input_ids", datatype="INT64", shape=[1, 2])
    tensor.contents.int64_contents.extend([1, 2])
    return request


def test_a_message_protobuf_cannot_parse_mid_stream_is_answered_and_the_stream_goes_on(served):
    """It ended the stream with status OK and the requests after it were never answered."""
    target, _, _ = served
    with grpc.insecure_channel(target) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       request_serializer=lambda b: b,
                                       response_deserializer=pb.ModelStreamInferResponse.FromString)
        sent = [_ids_request("r1").SerializeToString(), b"\xff\xff\xff", _ids_request("r3").SerializeToString()]
        call = stream(iter(sent), timeout=30)
        answers = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert len(answers) == 3, answers
    ok = sorted(a.infer_response.id for a in answers if not a.error_message)
    bad = [a for a in answers if a.error_message]
    assert ok == ["r1", "r3"] and len(bad) == 1, answers
    assert "not a valid inference.ModelInferRequest message" in bad[0].error_message
    assert bad[0].infer_response.parameters["triton_final_response"].bool_param


# --- fuzz ------------------------------------------------------------------------------------

def test_fuzzed_requests_against_the_server_are_never_internal(served):
    """The same generator through a live server: every answer OK or a 4xx-like status."""
    target, _, _ = served
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    codes = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(_tensor, max_size=2), st.lists(st.binary(max_size=8), max_size=1),
           st.sampled_from([None, "auto", "nope"]))
    def run(tensors, raw_extra, impl):
        try:
            stub.ModelInfer(_fuzzed_request(tensors, raw_extra, impl), timeout=30)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), exc.details()

    run()
    assert grpc.StatusCode.INVALID_ARGUMENT in codes
    assert gc.InferenceServerClient(target).is_server_live()
