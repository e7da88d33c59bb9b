"""The memory bounds on request bodies (service/body.py): a JSON body's values counted before
it is parsed (max_json_values, 413), and every body in progress together (max_total_body_bytes,
503 + Retry-After). The app runs in-process on the fake models."""
import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient

from service import codec
from service.app import create_app
from service.body import BodyBudget, BodyLease, check_json_values, json_extent
from service.errors import ServiceError
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
from error_bodies import error_message

VALUES = 4096


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_json_values=VALUES, max_queue_delay_ms=0), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client_ready(client)


def _ids(count: int) -> dict:
    return {"inputs": [{"name": "input_ids", "shape": [1, count], "datatype": "INT64", "data": [1] * count}]}


@pytest.mark.parametrize("path, body", [
    pytest.param("/v2/models/lfm2/infer", _ids(VALUES + 10), id="infer"),
    pytest.param("/v1/generate", {"input_ids": [1] * (VALUES + 10), "max_new_tokens": 1}, id="generate"),
    pytest.param("/v1/completions", {"prompt": [1] * (VALUES + 10), "max_tokens": 1}, id="completions")])
def test_a_json_body_of_too_many_values_is_a_413_before_it_is_parsed(client, path, body, monkeypatch):
    """A 32 MiB body of "0.5," parsed to ~256 MiB of Python floats (32 bytes each, 16x the
    body) before the tensor-size or token checks refused it; now it is never parsed."""
    def parse(*_):
        raise AssertionError("parsed")

    raw = json.dumps(body).encode()
    with monkeypatch.context() as patched:
        patched.setattr(codec, "_loads", parse)
        patched.setattr(json, "loads", parse)   # FastAPI's parser for the generate routes
        r = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "DWSERVE_MAX_JSON_VALUES" in error_message(r) and "binary" in error_message(r), r.text


def test_a_large_json_body_is_counted_too(client):
    """Over 1 MiB the count runs off the event loop (~20 ms for 32 MiB); same answer."""
    raw = json.dumps(_ids(600_000)).encode()
    assert len(raw) > 2**20
    r = client.post("/v2/models/lfm2/infer", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "DWSERVE_MAX_JSON_VALUES" in error_message(r), r.text


def test_a_json_body_under_the_value_limit_is_served(client):
    r = client.post("/v2/models/lfm2/infer", json=_ids(VALUES // 2))
    assert r.status_code == 200, r.text


def test_only_the_json_header_of_a_binary_body_is_counted():
    """A binary-extension body's tensor bytes may hold any number of 0x2c bytes."""
    header = json.dumps(_ids(4)).encode()
    body = header + b"," * 100_000
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    counted = lambda body, headers: check_json_values(body, json_extent(body, headers, infer=True), 1024)   # noqa: E731
    counted(body, headers)   # no error
    with pytest.raises(ServiceError) as info:
        counted(body, {"content-type": "application/json"})
    assert info.value.status == 413 and f"{header.count(b',') + 100_001} values" in info.value.message
    counted(b"," * 5000, {"content-type": "multipart/form-data; boundary=x"})   # an image: not JSON


@pytest.mark.parametrize("path, body", [
    pytest.param("/v1/generate", {"input_ids": [1] * (VALUES + 10), "max_new_tokens": 1}, id="generate"),
    pytest.param("/v1/completions", {"prompt": [1] * (VALUES + 10), "max_tokens": 1}, id="completions"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "a", "stop_words": ["x"] * (VALUES + 10)},
                 id="triton-generate")])
def test_a_binary_header_length_elsewhere_than_infer_does_not_skip_the_count(client, path, body, monkeypatch):
    """Only /infer reads Inference-Header-Content-Length: every other route parses its whole
    body as JSON. The count stopped at that header's length on every route, so
    `Inference-Header-Content-Length: 1` let a body of any number of values be parsed."""
    def parse(*_):
        raise AssertionError("parsed")

    raw = json.dumps(body).encode()
    with monkeypatch.context() as patched:
        patched.setattr(json, "loads", parse)   # FastAPI's parser
        r = client.post(path, content=raw, headers={"Content-Type": "application/json",
                                                    "Inference-Header-Content-Length": "1"})
    assert r.status_code == 413 and "DWSERVE_MAX_JSON_VALUES" in error_message(r), r.text


def test_the_budget_is_shared_and_given_back():
    budget = BodyBudget(100)
    first, second = BodyLease(budget), BodyLease(budget)
    first.grow_to(60)
    first.grow_to(40)   # never shrinks below what it took
    with pytest.raises(ServiceError) as info:
        second.grow_to(41)
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
    assert "DWSERVE_MAX_TOTAL_BODY_BYTES" in info.value.message
    second.grow_to(40)
    assert budget.held == 100
    first.close()
    second.close()
    assert budget.held == 0


def _scope(length: int) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/generate", "raw_path": b"/v1/generate", "query_string": b"", "root_path": "",
            "headers": [(b"content-length", str(length).encode()), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 9), "server": ("127.0.0.1", 80)}


def test_bodies_in_progress_together_are_bounded_and_released():
    """Each slow upload held its buffered bytes with no bound across requests: a few hundred
    clients sending 32 MiB bodies slowly held gigabytes before any queue limit saw them. Here:
    one upload holds 3000 of 4096 bytes; a second declaring 2000 is a 503 before it is read;
    once the first ends (a 408), a third of the same size is served."""
    settings = Settings(max_body_bytes=3000, max_total_body_bytes=4096, idle_timeout_s=0.5, max_queue_delay_ms=0)
    app = create_app(settings, models=fake_models(), hooks=fake_hooks())
    body = json.dumps({"prompt": "ab", "max_new_tokens": 1}).encode()
    body = body + b" " * (2000 - len(body))

    async def post(length, chunks, stall=False):
        sent, pending = [], list(chunks)

        async def receive():
            if pending:
                return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending) or stall}
            await asyncio.Event().wait()   # stalled: sends nothing more and stays connected

        async def send(message):
            sent.append(message)

        await app(_scope(length), receive, send)
        return sent

    async def run():
        async with app.router.lifespan_context(app):
            for _ in range(200):   # the fake models load at once
                if app.state.service.ready:
                    break
                await asyncio.sleep(0.02)
            slow = asyncio.ensure_future(post(3000, [b" " * 3000], stall=True))
            await asyncio.sleep(0.1)   # the slow upload holds its 3000 bytes
            refused = await post(len(body), [body])
            stalled = await slow
            served = await post(len(body), [body])
            return refused, stalled, served

    refused, stalled, served = asyncio.run(run())
    assert refused[0]["status"] == 503, refused
    assert dict(refused[0]["headers"])[b"retry-after"] == b"1"
    assert b"DWSERVE_MAX_TOTAL_BODY_BYTES" in refused[1]["body"], refused[1]["body"]
    assert stalled[0]["status"] == 408, stalled
    assert served[0]["status"] == 200, served


def test_grpc_messages_count_against_the_same_budget_as_rest_bodies():
    """gRPC calls held their messages (up to 2x --max-body-bytes each) with no bound across
    calls. Now they take from the one budget: while a slow call holds a 602 KB image, a second
    one (gRPC or REST) is refused UNAVAILABLE / 503, and once it is answered the next is served."""
    import threading

    import httpx
    import numpy as np
    pytest.importorskip("tritonclient.grpc")
    import tritonclient.grpc as gc
    from tritonclient.utils import InferenceServerException

    from tests.grpc_fake_server import _image, _infer, grpc_server

    image = _image(np.random.default_rng(0))
    with grpc_server(delay_s=1.5, warmup=False, max_body_bytes=700_000, max_total_body_bytes=1_000_000,
                     max_queue_delay_ms=0) as (target, url, _):
        slow = threading.Thread(target=_infer, args=(gc.InferenceServerClient(target), "mobilenet_v2", image))
        slow.start()
        time.sleep(0.5)   # the slow call holds its message
        with pytest.raises(InferenceServerException) as err:
            _infer(gc.InferenceServerClient(target), "mobilenet_v2", image)
        assert err.value.status() == "StatusCode.UNAVAILABLE", err.value
        assert "DWSERVE_MAX_TOTAL_BODY_BYTES" in err.value.message(), err.value.message()
        r = httpx.post(f"{url}/v2/models/mobilenet_v2/infer", content=b"x" * 600_000,
                       headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "10"})
        assert r.status_code == 503 and "DWSERVE_MAX_TOTAL_BODY_BYTES" in error_message(r), r.text
        slow.join(30)
        assert _infer(gc.InferenceServerClient(target), "mobilenet_v2", image).as_numpy("logits").shape == (1, 1000)


@pytest.mark.parametrize("path, body, headers", [
    pytest.param("/v2/models/lfm2/infer", json.dumps(_ids(VALUES + 10)).encode(),
                 {"Content-Type": "application/octet-stream"}, id="infer-octet-stream-json"),
    pytest.param("/v2/models/lfm2/infer", json.dumps(_ids(VALUES + 10)).encode() + b"\0" * 8,
                 {"Content-Type": "application/octet-stream",
                  "Inference-Header-Content-Length": str(len(json.dumps(_ids(VALUES + 10))))}, id="infer-binary-header"),
    pytest.param("/v2/models/lfm2/generate",
                 json.dumps({"text_input": "a", "sampling_parameters": {"x": [0.5] * (VALUES + 10)}}).encode(),
                 {"Content-Type": "text/plain"}, id="triton-generate-text-plain")])
def test_a_body_read_as_json_whatever_its_type_is_counted(client, path, body, headers, monkeypatch):
    """/infer reads an octet-stream body as JSON (whole, or its Inference-Header-Content-Length
    header: tritonclient's and dwserve loadtest's binary requests), and Triton's generate route
    reads JSON whatever the Content-Type: neither was counted (only JSON content types were), so
    each parsed its values unbounded."""
    def parse(*_):
        raise AssertionError("parsed")

    with monkeypatch.context() as patched:
        patched.setattr(codec, "_loads", parse)
        r = client.post(path, content=body, headers=headers)
    assert r.status_code == 413, r.text
    assert "DWSERVE_MAX_JSON_VALUES" in error_message(r), r.text
