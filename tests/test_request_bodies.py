"""Request bodies as the middleware takes them (service/body.py), on every POST route:
Content-Encoding decoded whole and bounded, and a client that stops sending its body
mid-upload let go of instead of held for good. The app runs in-process on the fake models."""
import asyncio
import gzip
import io
import json
import time
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
from error_bodies import error_message

LIMIT = 2**20
IDS = {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
GENERATE = {"prompt": "ab", "max_new_tokens": 2}


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_body_bytes=LIMIT, max_queue_delay_ms=0), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client_ready(client)


def _post(client, path, raw: bytes, encoding: str, content_type="application/json"):
    return client.post(path, content=raw, headers={"Content-Encoding": encoding, "Content-Type": content_type})


@pytest.mark.parametrize("path, body", [
    pytest.param("/v1/generate", GENERATE, id="generate"),
    pytest.param("/v1/completions", {"prompt": "ab", "max_tokens": 2}, id="completions"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 2}, id="chat"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "ab", "parameters": {"max_tokens": 2}}, id="triton-generate"),
    pytest.param("/v2/models/lfm2/infer", IDS, id="infer")])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_json_body_is_read_on_every_route(client, path, body, encoding):
    """Only /infer decoded Content-Encoding; elsewhere the compressed bytes reached the JSON
    parser: 'expected UTF-8 JSON; byte 0x8b at offset 1 is not valid UTF-8', naming no encoding."""
    raw = json.dumps(body).encode()
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    plain, r = client.post(path, content=raw, headers={"Content-Type": "application/json"}), _post(client, path, packed, encoding)
    assert plain.status_code == 200, plain.text
    assert r.status_code == 200, r.text


def test_a_compressed_multipart_upload_is_classified(client):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(png, format="PNG")
    multipart = client.build_request("POST", "/v1/classify", files={"file": ("x.png", png.getvalue(), "image/png")})
    raw = multipart.read()
    r = _post(client, "/v1/classify", gzip.compress(raw), "gzip", multipart.headers["content-type"])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/chat/completions", "/v2/models/lfm2/infer", "/v1/classify"])
def test_a_zip_bomb_is_a_413_and_an_unknown_encoding_a_415_everywhere(client, path):
    bomb = gzip.compress(b" " * (LIMIT * 8))   # 8 MiB of spaces in 8 KiB
    r = _post(client, path, bomb, "gzip")
    assert r.status_code == 413 and "DWSERVE_MAX_BODY_BYTES" in error_message(r), r.text
    r = _post(client, path, b"xx", "br")
    assert r.status_code == 415 and "gzip" in error_message(r), r.text


def test_a_body_of_several_gzip_members_is_read_whole(client):
    """RFC 1952: a gzip file may hold several members (`cat a.gz b.gz`, pigz, streaming
    compressors); zlib's decompressobj stops at the first one's end, and the rest was
    dropped without a word: here the JSON was cut in two."""
    raw = json.dumps(IDS).encode()
    r = _post(client, "/v2/models/lfm2/infer", gzip.compress(raw[:20]) + gzip.compress(raw[20:]), "gzip")
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 96]


@pytest.mark.parametrize("name, body, words", [
    pytest.param("truncated", gzip.compress(json.dumps(IDS).encode())[:-6], "truncated", id="gzip-without-its-trailer"),
    pytest.param("junk", gzip.compress(json.dumps(IDS).encode()) + b"junk", "after the gzip stream", id="gzip-then-junk"),
    pytest.param("deflate-junk", zlib.compress(json.dumps(IDS).encode()) + b"junk", "after the deflate stream", id="deflate-then-junk"),
    pytest.param("empty", b"", "truncated", id="empty")])
def test_a_damaged_stream_is_a_400_not_read_as_far_as_it_goes(client, name, body, words):
    """A gzip stream cut before its CRC-32 and length trailer was accepted (the check that
    catches corruption never ran), and bytes after the end of the stream were ignored."""
    encoding = "deflate" if name.startswith("deflate") else "gzip"
    r = _post(client, "/v2/models/lfm2/infer", body, encoding)
    assert r.status_code == 400 and words in error_message(r), r.text


def _post_scope(path: str, length: int) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"content-length", str(length).encode()), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 9), "server": ("127.0.0.1", 80)}


def _upload(settings: Settings, chunks, gap_s: float) -> tuple[list[dict], float]:
    """The app (ASGI, no server) given a POST whose body comes as `chunks` `gap_s` apart and
    then never ends -> (what the app sent, seconds until it answered)."""
    app = create_app(settings, models=fake_models(), hooks=fake_hooks())
    sent: list[dict] = []

    async def run():
        pending = list(chunks)

        async def receive():
            if pending:
                await asyncio.sleep(gap_s)
                return {"type": "http.request", "body": pending.pop(0), "more_body": True}
            await asyncio.Event().wait()   # the client sends nothing more, and stays connected

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(app(_post_scope("/v1/generate", 10_000), receive, send), 30)

    t0 = time.perf_counter()
    asyncio.run(run())
    return sent, time.perf_counter() - t0


def test_an_upload_that_stalls_is_a_408_after_the_idle_timeout():
    """A client that sends its headers and part of its body, then nothing, held its request
    (and the bytes buffered so far) for good: uvicorn's keep-alive timer is off while a
    request is in progress, and the body loop waited on receive() without a bound."""
    sent, took = _upload(Settings(idle_timeout_s=0.3, request_timeout_s=20), [b'{"prompt":'], gap_s=0)
    assert sent and sent[0]["status"] == 408, sent
    assert 0.25 < took < 5, took
    headers = dict(sent[0]["headers"])
    assert headers[b"connection"] == b"close"
    assert b"DWSERVE_IDLE_TIMEOUT_S" in sent[1]["body"], sent[1]["body"]


def test_an_upload_trickled_slower_than_the_request_timeout_is_a_408():
    """One byte every 0.1 s never trips a 0.3 s idle timer; the whole body must still arrive
    within DWSERVE_REQUEST_TIMEOUT_S."""
    sent, took = _upload(Settings(idle_timeout_s=0.3, request_timeout_s=1.0), [b" "] * 1000, gap_s=0.1)
    assert sent and sent[0]["status"] == 408, sent
    assert 0.9 < took < 5, took
    assert b"DWSERVE_REQUEST_TIMEOUT_S" in sent[1]["body"], sent[1]["body"]


def test_a_stalled_upload_releases_its_connection_on_the_real_server():
    """Under uvicorn (service/cli.run_server) the 408 goes out and the socket is closed: the
    connection, not only the request, is let go."""
    import socket

    from server_process import fake_server_cmd, server_process

    with server_process(fake_server_cmd(idle_timeout_s=1.0), timeout=60) as (url, _):
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            sock.settimeout(10)
            sock.sendall(b"POST /v2/models/lfm2/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            reply = b""
            while chunk := sock.recv(4096):   # ends when the server closes the connection
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b"DWSERVE_IDLE_TIMEOUT_S" in reply


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("raw, words", [
    pytest.param(b"[" * 100_000, "nested", id="deep-nesting"),
    pytest.param(b'{"prompt": "a", "seed": ' + b"9" * 5000 + b"}", "digits", id="5000-digit-number")])
def test_json_the_parser_gives_up_on_says_why(client, path, raw, words):
    """FastAPI parses these routes' bodies with the stdlib json, whose RecursionError and
    int-digits ValueError it answers with a bare 'There was an error parsing the body'."""
    r = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and words in error_message(r), r.text
