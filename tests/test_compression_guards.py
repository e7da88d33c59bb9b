"""Guards a mutation run found untested in service/compression.py's negotiate."""
import pytest

from service.compression import negotiate


@pytest.mark.parametrize("header, want", [
    pytest.param("gzip;q=0, gzip", None, id="a-refusal-listed-first-stands"),
    pytest.param("gzip, gzip;q=0", None, id="a-refusal-listed-last-stands"),
    pytest.param("gzip;q=0.5, deflate;q=0.5, *", None, id="star-weighs-identity-too"),
    pytest.param("gzip;q=0.5, *;q=0.4", "gzip", id="star-below-the-named-coding"),
])
def test_negotiate_duplicates_and_star(header, want):
    assert negotiate(header) == want


import asyncio

import numpy as np

from service.compression import PROBE_BYTES, CompressionMiddleware, worth_compressing


def test_a_binary_reply_saving_a_third_is_worth_compressing_and_fp32_noise_is_not():
    rng = np.random.default_rng(0)
    fewer_symbols = rng.integers(0, 32, 8 * PROBE_BYTES, dtype=np.uint8).tobytes()   # ~35% smaller
    fp32 = rng.standard_normal(2 * PROBE_BYTES).astype(np.float32).tobytes()        # ~7% smaller
    assert worth_compressing(fewer_symbols, 1, binary=True)
    assert not worth_compressing(fp32, 1, binary=True)


def _through(path, body, min_bytes=1024):
    """-> the response start CompressionMiddleware sends for a 200 of `body` to a gzip client."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"accept-encoding", b"gzip")]}
    asyncio.run(CompressionMiddleware(app, min_bytes=min_bytes, level=1)(scope, receive, send))
    return dict(sent[0]["headers"])


def test_a_body_of_exactly_min_bytes_is_compressed():
    assert _through("/v1/generate", b"a" * 1024).get(b"content-encoding") == b"gzip"
    assert _through("/v1/generate", b"a" * 1023).get(b"content-encoding") is None


def test_the_infer_route_with_a_trailing_slash_is_compressed_like_without():
    """Outside the guard the path still has the slash the guard drops: still the infer route."""
    assert _through("/v2/models/lfm2/infer/", b"a" * 4096).get(b"content-encoding") == b"gzip"
    assert _through("/v2/models/lfm2/ready/", b"a" * 4096).get(b"content-encoding") is None
