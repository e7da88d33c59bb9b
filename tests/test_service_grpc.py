"""OIP v2 over gRPC (service/grpc_server.py) with tritonclient.grpc against uvicorn in this
process (fake models): health, metadata, infer equal to the reference and to REST, the stream,
errors as gRPC status codes, auth, queue-full, message limits and deadlines, Triton's config,
statistics and model-repository extensions, the shared metrics and batcher, and fuzzed
messages. The codec is tests/test_grpc_codec.py; the real models over gRPC are in
test_service_server.py."""
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.testing import fake_hooks, fake_models, reference_logits  # noqa: E402
from tests.test_grpc_codec import _fuzzed_request, _tensor  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402

# --- in-process server (fake models) --------------------------------------------------------

@contextlib.contextmanager
def grpc_server(delay_s=0.0, **settings):
    from service.app import create_app
    from service.settings import Settings

    models = fake_models(delay_s=delay_s)
    app = create_app(Settings(grpc_port=0, **settings), models=models, hooks=fake_hooks())
    with in_process_server(app) as url:
        yield f"127.0.0.1:{app.state.service.grpc_port}", url, models


@pytest.fixture(scope="module")
def served():
    with grpc_server(max_batch_size=4) as s:
        yield s


def _image(rng, rows=1):
    return rng.standard_normal((rows, 3, 224, 224)).astype(np.float32)


def _infer(client, model, x, datatype="FP32", **kw):
    inp = gc.InferInput("input" if model == "mobilenet_v2" else "input_ids", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp], **kw)


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
        for key in ("inputs", "outputs"):
            assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in got[key]] == \
                   [(t["name"], t["datatype"], t["shape"]) for t in rest[key]]
    for call, args in ((client.is_model_ready, ("nope",)), (client.get_model_metadata, ("nope",)),
                       (client.get_model_metadata, ("lfm2", "2"))):
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


def _code_and_message(call):
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value.status(), err.value.message()


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


def test_a_stream_whose_client_does_not_read_is_not_read_either():
    """Backpressure on ModelStreamInfer: a client that sends requests without reading the
    answers used to have every one read, run and its answer kept in the server's memory
    (thousands a second, without limit). Now the server takes at most a window of them
    (queue + batch) beyond what gRPC itself buffers, and the client's sends wait."""
    from tritonclient.grpc import service_pb2 as pb
    with grpc_server(max_queue_size=4, max_batch_size=2) as (target, url, _):
        def requests():
            for i in range(100_000):
                tensor = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=[1, 2])
                tensor.contents.int64_contents.extend([1, 2])
                yield pb.ModelInferRequest(model_name="lfm2", id=str(i), inputs=[tensor])

        def served():
            text = httpx.get(f"{url}/metrics").text
            return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("dwserve_requests_total"))

        # No BDP probing: the answers' HTTP/2 window stays at its initial 64 KiB.
        with grpc.insecure_channel(target, options=[("grpc.http2.bdp_probe", 0)]) as channel:
            call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests())   # never read
            time.sleep(1.5)
            taken = served()
            time.sleep(1.0)
            assert served() == taken and taken < 1000, taken
            call.cancel()
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_concurrent_grpc_requests_share_the_batcher():
    with grpc_server(delay_s=0.05, max_batch_size=8, max_queue_delay_ms=20) as (target, url, models):
        rng = np.random.default_rng()
        images = [_image(rng) for _ in range(8)]

        def one(x):
            return _infer(gc.InferenceServerClient(target), "mobilenet_v2", x).as_numpy("logits")

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(one, images))
        for x, logits in zip(images, got):
            want = reference_logits(torch.from_numpy(x), models["mobilenet_v2"].weight).numpy()
            np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
        metrics = httpx.get(f"{url}/metrics").text
        count = sum_ = None
        for line in metrics.splitlines():
            if line.startswith('dwserve_batch_size_count{model="mobilenet_v2"}'):
                count = float(line.split()[-1])
            if line.startswith('dwserve_batch_size_sum{model="mobilenet_v2"}'):
                sum_ = float(line.split()[-1])
        assert sum_ >= 8 and count < sum_, (count, sum_)   # fewer forwards than requests: batched
        assert 'dwserve_requests_total{impl="auto",model="mobilenet_v2",status="200"} 8.0' in metrics


def test_auth_queue_full_and_message_limit():
    with grpc_server(delay_s=0.3, api_key="s3cret", max_batch_size=1, max_queue_size=1,
                     max_body_bytes=2**20) as (target, _, _):
        x = _image(np.random.default_rng())
        client = gc.InferenceServerClient(target)
        code, message = _code_and_message(lambda: _infer(client, "mobilenet_v2", x))
        assert code == "StatusCode.UNAUTHENTICATED" and "Bearer" in message
        headers = {"authorization": "Bearer s3cret"}
        assert _infer(client, "mobilenet_v2", x, headers=headers).as_numpy("logits").shape == (1, 1000)
        assert client.is_server_live()   # health stays open, as on REST

        # Two 1.2 MB images exceed the 1 MiB message limit: refused before any decoding.
        code, message = _code_and_message(lambda: _infer(client, "mobilenet_v2", np.repeat(x, 2, 0), headers=headers))
        assert code == "StatusCode.RESOURCE_EXHAUSTED"
        # gzip works, and the limit holds for the decompressed message (1.2 MB of zeros, ~1 KB sent).
        got = _infer(client, "mobilenet_v2", x, headers=headers, compression_algorithm="gzip").as_numpy("logits")
        assert got.shape == (1, 1000)
        zeros = np.zeros((2, 3, 224, 224), np.float32)
        code, _ = _code_and_message(lambda: _infer(client, "mobilenet_v2", zeros, headers=headers,
                                                   compression_algorithm="gzip"))
        assert code == "StatusCode.RESOURCE_EXHAUSTED"

        # One running, one queued: the rest are UNAVAILABLE with a retry-after trailer.
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
        inp = gc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        request = _get_inference_request("mobilenet_v2", [inp], "", "", None, 0, False, False, 0, None, None)

        def call(_):
            try:
                stub.ModelInfer(request, metadata=tuple(headers.items()), timeout=30)
                return "ok", None
            except grpc.RpcError as exc:
                return exc.code(), (exc.details(), dict(exc.trailing_metadata() or ()))

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(call, range(6)))
        shed = [info for code, info in outcomes if code == grpc.StatusCode.UNAVAILABLE]
        assert shed and all(code in ("ok", grpc.StatusCode.UNAVAILABLE) for code, _ in outcomes), outcomes
        assert all("queue" in details and trailers.get("retry-after") for details, trailers in shed), shed
        assert any(code == "ok" for code, _ in outcomes)
        (stats,) = client.get_inference_statistics("mobilenet_v2", as_json=True)["model_stats"]
        assert int(stats["inference_stats"]["fail"]["count"]) == len(shed)   # refused requests count as failed


def _forwards(url: str, model: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'dwserve_batch_size_count{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_client_deadline_drops_its_queued_request():
    """A call whose deadline passes while it waits in the queue is never computed: the
    cancelled RPC cancels its queued job (the batcher skips cancelled futures)."""
    with grpc_server(delay_s=0.4, max_batch_size=1) as (target, url, _):
        x = _image(np.random.default_rng())
        before = _forwards(url, "mobilenet_v2")
        with ThreadPoolExecutor(4) as pool:
            busy = pool.submit(_infer, gc.InferenceServerClient(target), "mobilenet_v2", x)
            time.sleep(0.1)   # the first request is computing; the next ones queue behind it
            late = [pool.submit(_code_and_message, lambda: _infer(gc.InferenceServerClient(target), "mobilenet_v2",
                                                                  x, client_timeout=0.15)) for _ in range(3)]
            assert busy.result().as_numpy("logits").shape == (1, 1000)
            assert all(f.result()[0] == "StatusCode.DEADLINE_EXCEEDED" for f in late)
        time.sleep(0.5)   # time for a wrongly kept job to run
        assert _forwards(url, "mobilenet_v2") - before == 1
        # The three that gave up are 499s (client closed), not 500s the 5xx alerts would read,
        # and their wait is not a latency observation.
        text = httpx.get(f"{url}/metrics").text
        assert 'dwserve_requests_total{impl="auto",model="mobilenet_v2",status="499"} 3.0' in text
        assert all(l.endswith(" 0.0") for l in text.splitlines() if l.startswith("dwserve_requests_total") and 'status="500"' in l)
        assert 'dwserve_request_duration_seconds_count{impl="auto",model="mobilenet_v2",route="infer"} 1.0' in text


def test_a_short_client_timeout_is_499():
    """tritonclient's client_timeout=0.05 on a 0.3 s forward: DEADLINE_EXCEEDED at the client,
    status 499 in the metrics (asyncio.CancelledError is not an Exception)."""
    with grpc_server(delay_s=0.3) as (target, url, _):
        x = _image(np.random.default_rng())
        code, _ = _code_and_message(lambda: _infer(gc.InferenceServerClient(target), "mobilenet_v2", x,
                                                   client_timeout=0.05))
        assert code == "StatusCode.DEADLINE_EXCEEDED"
        deadline = time.time() + 5
        while time.time() < deadline and 'status="499"' not in httpx.get(f"{url}/metrics").text:
            time.sleep(0.05)
        text = httpx.get(f"{url}/metrics").text
        assert 'dwserve_requests_total{impl="auto",model="mobilenet_v2",status="499"} 1.0' in text
        assert all(l.endswith(" 0.0") for l in text.splitlines() if l.startswith("dwserve_requests_total") and 'status="500"' in l)
        assert 'dwserve_inflight_requests{model="mobilenet_v2"} 0.0' in text


# --- Triton's model-configuration and statistics extensions -----------------------------------

def _ints(obj):
    """gRPC's JSON spells int64 as strings: back to ints for comparison with REST's."""
    if isinstance(obj, dict):
        return {k: _ints(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ints(v) for v in obj]
    return int(obj) if isinstance(obj, str) and obj.lstrip("-").isdigit() else obj


def test_model_config_over_rest_and_grpc(served):
    target, url, models = served
    import tritonclient.http as hc
    for model, served_model in models.items():
        rest = hc.InferenceServerClient(url.removeprefix("http://")).get_model_config(model)
        over_grpc = _ints(gc.InferenceServerClient(target).get_model_config(model, as_json=True)["config"])
        assert over_grpc == rest
        assert rest["max_batch_size"] == 4 and rest["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
        assert [(t["name"], t["data_type"], t["dims"]) for t in rest["input"]] == \
               [(t.name, "TYPE_" + t.datatype, list(t.shape[1:])) for t in served_model.inputs]
    assert httpx.get(f"{url}/v2/models/nope/config").status_code == 404
    assert "model_configuration" in gc.InferenceServerClient(target).get_server_metadata(as_json=True)["extensions"]


def test_statistics_count_both_front_ends():
    import tritonclient.http as hc
    with grpc_server(delay_s=0.05, max_batch_size=4, max_queue_delay_ms=20) as (target, url, _):
        rng = np.random.default_rng()
        rest_client = hc.InferenceServerClient(url.removeprefix("http://"), concurrency=4)

        def over_rest(x):
            inp = hc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return rest_client.infer("mobilenet_v2", [inp]).as_numpy("logits").shape[0]

        def over_grpc(x):
            return _infer(gc.InferenceServerClient(target), "mobilenet_v2", x).as_numpy("logits").shape[0]

        images = [_image(rng, rows) for rows in (1, 1, 1, 2, 1, 1, 1)]
        with ThreadPoolExecutor(7) as pool:
            rows = list(pool.map(lambda ix: (over_rest if ix[0] % 2 else over_grpc)(ix[1]), enumerate(images)))
        assert sum(rows) == 8
        rest = hc.InferenceServerClient(url.removeprefix("http://")).get_inference_statistics("mobilenet_v2")
        over_grpc_stats = _ints(gc.InferenceServerClient(target).get_inference_statistics("mobilenet_v2", as_json=True))
        for got in (rest, over_grpc_stats):
            (stats,) = got["model_stats"]
            inf = stats["inference_stats"]
            assert stats["inference_count"] == 8 and inf["success"]["count"] == 7
            assert inf["queue"]["count"] == 7 and inf["compute_infer"]["count"] == 7
            assert inf.get("fail", {}).get("count", 0) == 0
            batches = stats["batch_stats"]
            assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 8
            assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"] < 7   # batched
            assert inf["success"]["ns"] >= inf["compute_infer"]["ns"] > 0.05e9 * stats["execution_count"]
        everything = httpx.get(f"{url}/v2/models/stats").json()["model_stats"]
        assert {m["name"] for m in everything} == {"lfm2", "mobilenet_v2"}
        code, _ = _code_and_message(lambda: gc.InferenceServerClient(target).get_inference_statistics("nope"))
        assert code == "StatusCode.NOT_FOUND"


def test_model_repository_over_rest_and_grpc(served):
    """Triton's model-repository extension, as tritonclient calls it over both protocols."""
    import tritonclient.http as hc
    target, url, models = served
    rest, over_grpc = hc.InferenceServerClient(url.removeprefix("http://")), gc.InferenceServerClient(target)
    want = [{"name": m, "version": "1", "state": "READY", "reason": ""} for m in models]
    assert rest.get_model_repository_index() == want
    assert [{"reason": "", **m} for m in over_grpc.get_model_repository_index(as_json=True)["models"]] == want
    assert httpx.post(f"{url}/v2/repository/index", json={"ready": True}).json() == want
    assert "model_repository" in rest.get_server_metadata()["extensions"]
    rest.load_model("lfm2")           # served and ready: nothing to do
    over_grpc.load_model("mobilenet_v2")
    for client in (rest, over_grpc):  # fixed at start: the errors say so, the models stay served
        for call, kwargs, code in ((client.unload_model, {}, ("400", "INVALID_ARGUMENT")),
                                   (client.load_model, {"model_name": "nope"}, ("404", "NOT_FOUND")),
                                   (client.load_model, {"config": '{"max_batch_size": 2}'}, ("400", "INVALID_ARGUMENT"))):
            with pytest.raises(InferenceServerException) as err:
                call(**{"model_name": "lfm2", **kwargs})
            assert str(err.value.status()).endswith(code) and "--model" in err.value.message()
    for bad in (b'{"ready": "maybe"}', b'{"ready": 0}', b'{"readyy": true}', b"[1]", b"{"):
        r = httpx.post(f"{url}/v2/repository/index", content=bad, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and "error" in r.json(), (bad, r.text)
    many = {f"file:{i}/{'x' * 100}": "" for i in range(50)}
    r = httpx.post(f"{url}/v2/repository/models/lfm2/load", json={"parameters": many})
    assert r.status_code == 400 and "(50: 'file:0/" in r.json()["error"] and len(r.text) < 500
    assert rest.get_model_repository_index() == want and rest.is_model_ready("lfm2")


def test_repository_index_says_loading_and_why_a_model_is_unavailable():
    from service.app import Service
    from service.settings import Settings
    from service.triton_ext import repository_index

    svc = Service(Settings(), models=fake_models())   # not loaded yet
    assert [(m["name"], m["state"]) for m in repository_index(svc)] == [("lfm2", "LOADING"), ("mobilenet_v2", "LOADING")]
    assert repository_index(svc, ready_only=True) == []
    svc.load_error = "FileNotFoundError: no config.json in /models/lfm2"
    assert {m["state"] for m in repository_index(svc)} == {"UNAVAILABLE"}
    assert repository_index(svc)[0]["reason"] == svc.load_error


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
