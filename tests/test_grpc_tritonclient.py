"""What a tritonclient.grpc user relies on beyond test_grpc_infer.py: streams that mark
each answer final as Triton does, an oversized message refused naming the limit and its
setting, and the RPCs dwserve does not serve refused with a reason (no traceback in the log).
In-process server, fake models."""
import logging
import queue

import numpy as np
import pytest
import torch

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from server_process import metric_sum  # noqa: E402
from tests.grpc_fake_server import grpc_server  # noqa: E402


def _ids_input(ids: np.ndarray):
    inp = gc.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    return inp


@pytest.mark.parametrize("empty_final", [pytest.param(False, id="plain"), pytest.param(True, id="empty-final-asked")])
def test_every_stream_answer_is_marked_final_as_triton_does(empty_final):
    """Triton sets `triton_final_response` on every ModelStreamInfer response (true on a
    request's last one; a non-decoupled model's only one), and stream clients loop until
    they see it: without it the client below waited for ever."""
    with grpc_server(warmup=False) as (target, _, _):
        client = gc.InferenceServerClient(target)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            ids = np.array([[3, 1, 4]], dtype=np.int64)
            client.async_stream_infer("lfm2", [_ids_input(ids)], request_id="q7",
                                      enable_empty_final_response=empty_final)
            seen = []
            while True:   # the usual client loop: read until the final flag
                result, error = answers.get(timeout=5)
                assert error is None, error
                response = result.get_response()
                seen.append(response.id)
                if response.parameters["triton_final_response"].bool_param:
                    break
        except queue.Empty:
            pytest.fail(f"no response marked triton_final_response after {seen}")
        finally:
            client.stop_stream()
        assert seen == ["q7"] and result.as_numpy("logits").shape == (1, 96)


def test_a_stream_error_answer_names_its_request_and_is_final():
    """An error answers its request only; like Triton's, it carries the request's id, model
    name and version and the final flag, so a client can match it and stop waiting."""
    with grpc_server(warmup=False) as (target, _, _):
        tensor = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=[1, 2])
        tensor.contents.int64_contents.extend([1, 2])
        requests = [pb.ModelInferRequest(model_name="lfm2", model_version="7", id="v7", inputs=[tensor]),
                    pb.ModelInferRequest(model_name="lfm2", id="ok", inputs=[tensor])]
        with grpc.insecure_channel(target) as channel:
            got = list(pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(requests), timeout=30))
    bad, good = sorted(got, key=lambda r: r.infer_response.id != "v7")
    assert "expected '1'" in bad.error_message
    assert (bad.infer_response.id, bad.infer_response.model_name, bad.infer_response.model_version) == ("v7", "lfm2", "7")
    assert bad.infer_response.parameters["triton_final_response"].bool_param
    assert good.error_message == "" and good.infer_response.id == "ok"
    assert good.infer_response.parameters["triton_final_response"].bool_param


def test_an_oversized_message_is_refused_naming_the_limit_and_its_setting():
    """A batch past --max-body-bytes (the gRPC message limit, as REST's body limit): grpc's
    own check said only "Received message larger than max (N vs. M)", not which setting.
    Now RESOURCE_EXHAUSTED naming both, metered 413 as REST's; the server stays up."""
    limit = 2**20
    with grpc_server(warmup=False, max_body_bytes=limit) as (target, url, _):
        client = gc.InferenceServerClient(target)
        images = np.zeros((2, 3, 224, 224), np.float32)   # 1.2 MB
        inp = gc.InferInput("input", list(images.shape), "FP32")
        inp.set_data_from_numpy(images)
        for compression in (None, "gzip"):   # the limit is on the decompressed message
            with pytest.raises(InferenceServerException) as err:
                client.infer("mobilenet_v2", [inp], compression_algorithm=compression)
            assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            message = err.value.message()
            assert f"the limit is {limit}" in message and "--max-body-bytes" in message, message
            assert "DWSERVE_MAX_BODY_BYTES" in message and "1204" in message, message
        assert metric_sum(url, "dwserve_requests_total", impl="auto", model="mobilenet_v2", status="413") == 2
        # Past twice the limit grpc refuses it unread (its own message): still RESOURCE_EXHAUSTED.
        many = gc.InferInput("input", [4, 3, 224, 224], "FP32")
        many.set_data_from_numpy(np.zeros((4, 3, 224, 224), np.float32))   # 2.4 MB
        with pytest.raises(InferenceServerException) as err:
            client.infer("mobilenet_v2", [many])
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        one = gc.InferInput("input", [1, 3, 224, 224], "FP32")
        one.set_data_from_numpy(images[:1])
        assert client.infer("mobilenet_v2", [one]).as_numpy("logits").shape == (1, 1000)


def test_a_body_limit_past_grpcs_int32_options_still_serves_grpc():
    """--max-body-bytes 3000000000 (REST takes it) with --grpc-port: grpc's message-length
    options are C ints, and the server failed to start (OverflowError in the lifespan). They
    are capped at 2**31 - 1, the most a protobuf message can be anyway."""
    with grpc_server(warmup=False, max_body_bytes=3_000_000_000) as (target, _, _):
        client = gc.InferenceServerClient(target)
        assert client.is_server_live()
        assert client.infer("lfm2", [_ids_input(np.array([[1, 2]], np.int64))]).as_numpy("logits").shape == (1, 96)


@pytest.fixture(scope="module")
def served():
    with grpc_server(warmup=False) as (target, _, _):
        yield target


@pytest.mark.parametrize("call, why", [
    pytest.param(lambda c: c.get_system_shared_memory_status(), "shared memory", id="system-shm-status"),
    pytest.param(lambda c: c.register_system_shared_memory("r", "/k", 64), "shared memory", id="system-shm-register"),
    pytest.param(lambda c: c.unregister_system_shared_memory(), "shared memory", id="system-shm-unregister"),
    pytest.param(lambda c: c.get_cuda_shared_memory_status(), "shared memory", id="cuda-shm-status"),
    pytest.param(lambda c: c.get_trace_settings(), "/metrics", id="trace"),
    pytest.param(lambda c: c.get_log_settings(), "--log-level", id="log"),
])
def test_unserved_rpcs_are_unimplemented_with_a_reason_and_no_traceback(served, call, why, caplog):
    """The generated servicer's default raised NotImplementedError: the client read
    "Unexpected <class 'NotImplementedError'>: Method not implemented!" and the server logged
    an ERROR traceback per call (tritonclient's shared-memory cleanup calls these)."""
    client = gc.InferenceServerClient(served)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(InferenceServerException) as err:
            call(client)
        assert err.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "Unexpected" not in err.value.message() and why in err.value.message(), err.value.message()
        assert client.is_server_live()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_refused_token_is_counted_401_like_rests():
    """dwserve_requests_total counts both front ends alike: REST counted a refused bearer
    token 401, gRPC did not count it at all (its check ran before the metered path)."""
    with grpc_server(warmup=False, api_key="s3cret") as (target, url, _):
        inp = _ids_input(np.array([[1, 2]], np.int64))
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as err:
                gc.InferenceServerClient(target).infer("lfm2", [inp], headers=headers)
            assert err.value.status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in err.value.message()
        ok = gc.InferenceServerClient(target).infer("lfm2", [inp], headers={"authorization": "Bearer s3cret"})
        assert ok.as_numpy("logits").shape == (1, 96)
        counted = dict(impl="auto", model="lfm2")
        assert metric_sum(url, "dwserve_requests_total", **counted, status="401") == 2
        assert metric_sum(url, "dwserve_requests_total", **counted, status="200") == 1


def test_a_stream_refused_for_its_token_is_counted_401():
    """A stream's token is checked once, before any of its requests is read: refused, it was
    not counted at all, so a client retrying a wrong token on streams never showed up."""
    with grpc_server(warmup=False, api_key="s3cret") as (target, url, _):
        client = gc.InferenceServerClient(target)
        errors: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: errors.put(error), headers={"authorization": "Bearer wrong"})
        try:
            client.async_stream_infer("lfm2", [_ids_input(np.array([[1, 2]], np.int64))])
        except InferenceServerException:
            pass   # the stream was refused before this request went out (its error is in the callback)
        error = errors.get(timeout=30)
        client.stop_stream()
        assert error is not None and "UNAUTHENTICATED" in str(error.status()), error
        assert metric_sum(url, "dwserve_requests_total", impl="auto", model="unknown", status="401") == 1


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_tensor_in_shared_memory_is_refused_saying_so(where):
    """As REST's (tests/test_oip_rest_conformance.py): an output asked into a shared-memory
    region was answered inline, the region left stale for the client to read as the result;
    an input there was read as a tensor with no values."""
    with grpc_server(warmup=False) as (target, _, _):
        inp = _ids_input(np.array([[1, 2]], np.int64))
        out = gc.InferRequestedOutput("logits")
        if where == "input":
            inp = gc.InferInput("input_ids", [1, 2], "INT64")
            inp.set_shared_memory("region0", 16)
        else:
            out.set_shared_memory("region0", 4 * 96)
        with pytest.raises(InferenceServerException) as err:
            gc.InferenceServerClient(target).infer("lfm2", [inp], outputs=[out])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
        assert f"{where} " in err.value.message() and "shared memory" in err.value.message(), err.value.message()


def test_a_reply_past_64_mib_goes_out():
    """grpc's send limit was max(--max-body-bytes, 64 MiB): a reply larger than that (the real
    lfm2's logits are 256 KiB a row, so a batch of 257 rows at --max-batch-size 1024) was
    computed, counted 200, and then refused by grpc itself, the client reading
    RESOURCE_EXHAUSTED "Sent message larger than max", as if it had asked too much. The limit
    is on what clients send; replies go out up to protobuf's 2 GiB, as Triton's do."""
    from service.app import create_app
    from service.settings import Settings
    from service.testing import FakeClassifier, fake_hooks, fake_models, reference_logits
    from tests.test_service_server import in_process_server

    models = {**fake_models(), "mobilenet_v2": FakeClassifier(num_classes=3_000_000)}   # 12 MB a row
    app = create_app(Settings(grpc_port=0, warmup=False), models=models, hooks=fake_hooks())
    with in_process_server(app) as url:
        client = gc.InferenceServerClient(f"127.0.0.1:{app.state.service.grpc_port}")
        x = np.random.default_rng(0).standard_normal((6, 3, 224, 224)).astype(np.float32)   # 3.6 MB
        inp = gc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        logits = client.infer("mobilenet_v2", [inp]).as_numpy("logits")   # 72 MB
        want = reference_logits(torch.from_numpy(x), models["mobilenet_v2"].weight).numpy()
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
        assert metric_sum(url, "dwserve_requests_total", impl="auto", model="mobilenet_v2", status="200") == 1
