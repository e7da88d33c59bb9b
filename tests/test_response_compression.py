"""Response compression (service/compression.py): tritonclient.http's
response_compression_algorithm gzip and deflate get the same logits (JSON and binary_data,
whose Inference-Header-Content-Length describes the decompressed body), tritonclient.http.aio
(whose aiohttp asks for gzip on every call but decodes only infer replies) still reads every
/v2 reply, Accept-Encoding is negotiated by q-value, small bodies, errors and SSE streams go
uncompressed (streams still token by token), /metrics is gzipped once and HEAD describes
identity, big bodies are compressed off the event loop, and the settings turn it off."""
import asyncio
import gzip
import json
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

hc = pytest.importorskip("tritonclient.http")
import tritonclient.http.aio as aioc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from service import cli, compression  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.testing import FakeLanguageModel, fake_hooks, fake_models  # noqa: E402
import cli_capture  # noqa: E402
from server_process import client_ready, metric_value  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402

VOCAB = 32768   # JSON logits ~650 KB: above OFF_LOOP_BYTES, as a real vocabulary's are
captured = cli_capture.captured   # serve without uvicorn: the Settings it would serve with
LIMITS = dict(max_batch_size=4, max_sequence_length=64, max_new_tokens=16, request_timeout_s=30)


class RandomLogitsLM(FakeLanguageModel):
    """Logits of real-looking floats (the fake's one-hot rows compress to nothing), the same
    for the same row whatever it is batched with."""

    def forward(self, inputs):
        ids = inputs["input_ids"]
        self._enter(ids.shape[0])
        return {"logits": torch.stack([_row(r) for r in ids.tolist()])}


def _row(ids):
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(sum(ids)))


def _models(token_delay_s=0.0):
    return {**fake_models(), "lfm2": RandomLogitsLM(vocab_size=VOCAB, token_delay_s=token_delay_s)}


@pytest.fixture(scope="module")
def url():
    """uvicorn in this process; min size 0, so any /v2 reply but infer's would be compressed
    were it not kept identity; generation at 0.1 s a token, so a buffered stream shows."""
    app = create_app(Settings(response_compression_min_bytes=0, **LIMITS), models=_models(0.1), hooks=fake_hooks())
    with in_process_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(**LIMITS), models=_models(), hooks=fake_hooks())) as c:
        yield client_ready(c)


@pytest.fixture
def packed(monkeypatch):
    """Every compression the server makes: (coding, bytes in, thread it ran on)."""
    made, real = [], compression.compress
    monkeypatch.setattr(compression, "compress", lambda body, coding, level: (
        made.append((coding, len(body), threading.current_thread().name)), real(body, coding, level))[1])
    return made


@pytest.mark.parametrize("header, coding", [
    (None, None), ("", None), ("gzip", "gzip"), ("deflate", "deflate"), ("deflate, gzip", "gzip"),
    ("GZIP", "gzip"), ("x-gzip", "gzip"), ("gzip;q=0", None), ("gzip;q=0, deflate", "deflate"),
    ("identity", None), ("*", "gzip"), ("*;q=0", None), ("*, gzip;q=0", "deflate"), ("br, zstd", None),
    ("gzip;q=0.5", "gzip"), ("gzip;q=0.5, identity", None), ("gzip;q=0.2, deflate;q=0.9", "deflate"),
    ("gzip;q=abc", None), ("gzip;q=1.5", None), ("gzip ; Q=0.000", None), ("gzip, gzip;q=0", None),
    ("gzip, deflate, br, zstd", "gzip"),
])
def test_negotiate(header, coding):
    assert compression.negotiate(header) == coding


def _ids(module=hc, ids=((5, 6, 7),)):
    x = module.InferInput("input_ids", [len(ids), len(ids[0])], "INT64")
    x.set_data_from_numpy(np.array(ids, dtype=np.int64))
    return x


@pytest.mark.parametrize("binary", [pytest.param(False, id="json"), pytest.param(True, id="binary_data")])
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_gets_the_same_logits_compressed(url, packed, algorithm, binary, monkeypatch):
    # Random FP32 logits shrink ~7%: under MIN_SAVING, so as binary they'd go uncompressed
    # (test_incompressible_binary_tensors_go_as_they_are); any saving is taken here.
    monkeypatch.setattr(compression, "MIN_SAVING", 0.0)
    c = hc.InferenceServerClient(url.removeprefix("http://"))
    outputs = [hc.InferRequestedOutput("logits", binary_data=binary)]
    plain = c.infer("lfm2", [_ids()], outputs=outputs).as_numpy("logits")
    assert packed == []   # geventhttpclient sends no Accept-Encoding: identity
    np.testing.assert_array_equal(plain, _row([5, 6, 7]).numpy()[None])
    got = c.infer("lfm2", [_ids()], outputs=outputs, request_compression_algorithm=algorithm,
                  response_compression_algorithm=algorithm)
    assert [p[0] for p in packed] == [algorithm]
    np.testing.assert_array_equal(got.as_numpy("logits"), plain)


def test_tritonclient_aio_reads_every_v2_reply(url, packed, monkeypatch):
    """aiohttp sends `Accept-Encoding: gzip, deflate` and tritonclient.aio does not decode
    (auto_decompress=False) but for infer: metadata, statistics and errors stay identity."""
    monkeypatch.setattr(compression, "MIN_SAVING", 0.0)   # its binary FP32 logits: ~7% smaller
    async def calls():
        async with aioc.InferenceServerClient(url.removeprefix("http://")) as c:
            assert (await c.get_server_metadata())["name"]
            assert (await c.get_model_metadata("lfm2"))["name"] == "lfm2"
            assert (await c.get_model_config("lfm2"))
            assert (await c.get_inference_statistics())["model_stats"]
            wrong = aioc.InferInput("nope", [1, 1], "INT64")
            wrong.set_data_from_numpy(np.ones((1, 1), np.int64))
            with pytest.raises(InferenceServerException) as err:
                await c.infer("lfm2", [wrong])
            assert err.value.status() == "400" and "decoding the response" not in err.value.message()
            return (await c.infer("lfm2", [_ids(aioc)])).as_numpy("logits")

    np.testing.assert_array_equal(asyncio.run(calls()), _row([5, 6, 7]).numpy()[None])
    assert [p[0] for p in packed] == ["gzip"]   # the infer reply alone


def _raw(client, method, path, accept, **kwargs):
    """(response, body bytes as sent) with Accept-Encoding `accept`."""
    headers = {**kwargs.pop("headers", {}), "Accept-Encoding": accept}
    with client.stream(method, path, headers=headers, **kwargs) as r:
        return r, b"".join(r.iter_raw())


def _infer_body(rows=((5, 6, 7),)):
    return {"inputs": [{"name": "input_ids", "shape": [len(rows), len(rows[0])], "datatype": "INT64",
                        "data": [i for r in rows for i in r]}]}


@pytest.mark.parametrize("accept, coding", [
    ("gzip", "gzip"), ("deflate", "deflate"), ("gzip, deflate, br", "gzip"), ("gzip;q=0.2, deflate;q=0.9", "deflate"),
    ("*", "gzip"), ("gzip;q=0", None), ("identity", None), ("br", None), ("", None),
])
def test_accept_encoding_variants_on_infer(client, accept, coding):
    r, sent = _raw(client, "POST", "/v2/models/lfm2/infer", accept, json=_infer_body())
    assert r.status_code == 200 and r.headers.get("content-encoding") == coding
    assert int(r.headers["content-length"]) == len(sent)
    assert r.headers["vary"] == "Accept-Encoding" and "x-request-id" in r.headers
    body = {"gzip": gzip.decompress, "deflate": zlib.decompress, None: bytes}[coding](sent)
    np.testing.assert_array_equal(json.loads(body)["outputs"][0]["data"], _row([5, 6, 7]).numpy())


def test_binary_reply_header_length_describes_the_decompressed_body(client, monkeypatch):
    monkeypatch.setattr(compression, "MIN_SAVING", 0.0)   # random FP32: ~7% smaller
    body = json.dumps({**_infer_body(), "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    r, sent = _raw(client, "POST", "/v2/models/lfm2/infer", "gzip", content=gzip.compress(body),
                   headers={"Content-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    whole, n = gzip.decompress(sent), int(r.headers["inference-header-content-length"])
    head = json.loads(whole[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == len(whole) - n == VOCAB * 4
    np.testing.assert_array_equal(np.frombuffer(whole[n:], "<f4"), _row([5, 6, 7]).numpy())


def test_incompressible_binary_tensors_go_as_they_are(client, packed):
    """Clients ask for gzip by default (httpx, requests, aiohttp); FP32 logits as binary data
    would cost a compression of the whole body (8 ms for LFM2's 256 KiB) to save ~7%: only a
    tail sample is tried, and the reply goes identity. JSON of the same logits halves, and
    binary data that does compress (the fake LM's one-hot rows) is compressed."""
    binary = {**_infer_body(), "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    r, sent = _raw(client, "POST", "/v2/models/lfm2/infer", "gzip, deflate", json=binary)
    assert r.status_code == 200 and "content-encoding" not in r.headers and packed == []
    assert len(sent) > VOCAB * 4 and r.headers["vary"] == "Accept-Encoding"
    r, sent = _raw(client, "POST", "/v2/models/lfm2/infer", "gzip, deflate", json=_infer_body())
    assert r.headers["content-encoding"] == "gzip" and len(packed) == 1
    with TestClient(create_app(Settings(**LIMITS), models={**fake_models(), "lfm2": FakeLanguageModel(vocab_size=VOCAB)},
                                  hooks=fake_hooks())) as c:
        r, sent = _raw(client_ready(c), "POST", "/v2/models/lfm2/infer", "gzip", json=binary)
    assert r.headers["content-encoding"] == "gzip" and len(sent) < VOCAB * 4 / 10
    whole, n = gzip.decompress(sent), int(r.headers["inference-header-content-length"])
    assert np.frombuffer(whole[n:], "<f4").sum() == 1.0   # one-hot: the (last id + 1)th


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/v2/health/ready", {}),
    ("GET", "/v1/models", {}),
    ("POST", "/v1/generate", {"json": {"input_ids": [1, 2], "max_new_tokens": 2}}),
    ("POST", "/v2/models/lfm2/infer", {"json": {"inputs": [{"name": "nope"}]}}),   # an error
])
def test_small_bodies_and_errors_go_uncompressed(client, method, path, kwargs):
    r, sent = _raw(client, method, path, "gzip", **kwargs)
    assert "content-encoding" not in r.headers and int(r.headers["content-length"]) == len(sent)
    assert "vary" not in r.headers, "its form does not depend on Accept-Encoding"


def test_only_infer_is_compressed_under_v2_and_big_bodies_off_the_loop(url, packed):
    """At min size 0 every /v2 reply is big enough: only infer's is compressed (Triton's rule;
    its clients read the rest raw). The ~650 KB logits are compressed in a worker thread,
    the few KB of /metrics on the event loop's."""
    for path in ("/v2", "/v2/models/lfm2", "/v2/models/lfm2/config", "/v2/models/stats"):
        r = httpx.get(url + path, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and "content-encoding" not in r.headers, path
    assert packed == []
    small = httpx.get(url + "/metrics", headers={"Accept-Encoding": "gzip"})
    big = httpx.post(url + "/v2/models/lfm2/infer", json=_infer_body(), headers={"Accept-Encoding": "gzip"})
    assert small.headers["content-encoding"] == big.headers["content-encoding"] == "gzip"
    (_, small_n, loop), (_, big_n, worker) = packed
    assert small_n < compression.OFF_LOOP_BYTES < big_n and loop != worker
    assert worker.startswith("dwserve-compress"), worker   # its own pool, not the loop's default one


def test_metrics_gzipped_once_and_head_describes_identity(client):
    r, sent = _raw(client, "GET", "/metrics", "gzip")
    assert r.headers["content-encoding"] == "gzip" and r.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(sent).startswith(b"# HELP")   # one layer: the route does not gzip itself
    plain, text = _raw(client, "GET", "/metrics", "identity")
    head, nothing = _raw(client, "HEAD", "/metrics", "gzip")
    assert head.status_code == 200 and nothing == b"" and "content-encoding" not in head.headers
    assert abs(int(head.headers["content-length"]) - len(text)) < 200 and head.headers["vary"] == "Accept-Encoding"


def test_guard_meters_a_compressed_reply_as_its_status(client):
    def served():
        return metric_value(client.get("/metrics").text, "dwserve_requests_total", model="lfm2", status="200")
    before = served()
    r, _ = _raw(client, "POST", "/v2/models/lfm2/infer", "gzip", json=_infer_body())
    assert r.headers["content-encoding"] == "gzip" and served() == before + 1


@pytest.mark.parametrize("path, body", [
    ("/v1/generate", {"input_ids": [1, 2], "max_new_tokens": 6, "ignore_eos": True, "stream": True}),
    ("/v1/completions", {"model": "lfm2", "prompt": [1, 2], "max_tokens": 6, "stream": True}),
])
def test_streams_go_uncompressed_token_by_token(url, packed, path, body):
    with httpx.stream("POST", url + path, json=body, headers={"Accept-Encoding": "gzip"}, timeout=30) as r:
        assert r.status_code == 200 and "content-encoding" not in r.headers
        assert r.headers["content-type"].startswith("text/event-stream")
        t0, arrivals = time.perf_counter(), []
        for line in r.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter() - t0)
    assert len(arrivals) >= 6 and arrivals[-1] - arrivals[0] > 0.3, arrivals   # 0.1 s a token, as made
    assert packed == []


@pytest.mark.parametrize("setting", [{"response_compression_level": 0},
                                     {"response_compression_min_bytes": 10**9}])
def test_settings_turn_it_off(setting):
    with TestClient(create_app(Settings(**LIMITS, **setting), models=_models(), hooks=fake_hooks())) as c:
        r, sent = _raw(client_ready(c), "POST", "/v2/models/lfm2/infer", "gzip", json=_infer_body())
    assert "content-encoding" not in r.headers and json.loads(sent)["outputs"]


def test_flags_and_variables(monkeypatch, captured, capsys):
    monkeypatch.setenv("DWSERVE_RESPONSE_COMPRESSION_MIN_BYTES", "4096")
    assert cli.main(["serve", "--response-compression-level", "0"]) == 0
    s = captured["settings"]
    assert (s.response_compression_level, s.response_compression_min_bytes) == (0, 4096)
    assert cli.main(["serve", "--response-compression-level", "10"]) == 2
    assert "--response-compression-level 10: expected an integer >= 0 and <= 9" in capsys.readouterr().err


def _run(app, accept="gzip"):
    """A bare ASGI app under the middleware (min 1024, level 1) -> (start message, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"accept-encoding", accept.encode())]}
    asyncio.run(compression.CompressionMiddleware(app, min_bytes=1024, level=1)(scope, receive, send))
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


def _app(chunks, **headers):
    async def app(scope, receive, send):
        length = sum(map(len, chunks))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(length).encode()), *((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items())]})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
    return app


def test_a_body_that_does_not_shrink_goes_as_it_was():
    body = np.random.default_rng(0).bytes(4096)
    start, sent = _run(_app([body]))
    assert sent == body and dict(start["headers"])[b"vary"] == b"Accept-Encoding"
    assert b"content-encoding" not in dict(start["headers"])


def test_chunks_of_a_declared_length_are_compressed_whole_and_vary_is_merged():
    start, sent = _run(_app([b"a" * 3000, b"b" * 3000], vary="Origin"))
    headers = dict(start["headers"])
    assert gzip.decompress(sent) == b"a" * 3000 + b"b" * 3000 and int(headers[b"content-length"]) == len(sent)
    assert headers[b"vary"] == b"Origin, Accept-Encoding" and headers[b"content-encoding"] == b"gzip"


def test_an_encoded_or_streamed_body_is_left_alone():
    for app in (_app([b"x" * 5000], content_encoding="br"), _app([b"data: xx\n\n" * 500], content_type="text/event-stream")):
        start, sent = _run(app)
        assert b"vary" not in dict(start["headers"]) and len(sent) == 5000
