"""OIP v2 over gRPC under load and at its limits, with tritonclient.grpc against uvicorn in
this process (fake models): a stream whose client does not read is not read either
(backpressure), concurrent calls share REST's batcher, the bearer token, the message limit
(gzip included) and the full queue (UNAVAILABLE + retry-after), and client deadlines (a
queued call that gives up is never computed and counts as 499)."""
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402

from service.testing import reference_logits  # noqa: E402
from server_process import metric_sum  # noqa: E402
from tests.grpc_fake_server import StreamContext, _code_and_message, _image, _infer, grpc_server  # noqa: E402


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
            return metric_sum(url, "dwserve_requests_total")

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
    return metric_sum(url, "dwserve_batch_size_count", model=model)


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


def test_a_stream_takes_no_message_before_it_has_a_place_for_it():
    """A stream's window (queue + batch) bounds the messages taken and not yet answered; each
    taken one is in the body budget (its lease). The next message used to be taken first and
    then wait for a place, held outside the budget: one of up to --max-body-bytes per stream.
    Now, with every place held by a request still computing, no further message is read."""
    import asyncio

    from tritonclient.grpc import service_pb2 as pb

    from service.app import create_app
    from service.grpc_infer import InferCalls
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models
    from tests.test_service_server import in_process_server

    settings = Settings(max_queue_size=1, max_batch_size=2)
    window = settings.max_queue_size + settings.max_batch_size
    app = create_app(settings, models=fake_models(delay_s=0.5), hooks=fake_hooks())
    taken = []

    async def requests():   # endless; counts what the server reads
        while True:
            tensor = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=[1, 2])
            tensor.contents.int64_contents.extend([1, 2])
            taken.append(len(taken))
            yield pb.ModelInferRequest(model_name="lfm2", id=str(len(taken)), inputs=[tensor])

    async def run():
        answers = InferCalls(app.state.service).ModelStreamInfer(requests(), StreamContext())
        first = asyncio.ensure_future(answers.__anext__())   # starts the stream's reader
        # Until the window is read (a loaded box may take its time), then a moment more: no
        # answer is taken meanwhile (`first` is the only read), so no place ever frees. The
        # model takes 0.5 s a batch, so the ones read are still leased.
        deadline = time.monotonic() + 10
        while len(taken) < window and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        read, held = len(taken), app.state.service.bodies.held
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await answers.aclose()
        return read, held

    with in_process_server(app):
        read, held = asyncio.run(run())
    assert read == window, (read, window)
    assert held > 0   # the taken ones are leased (the budget counts them)
