"""The malformed-request battery the service tests send (in-process and to a live server):
every case must get a 4xx with an {"error": ...} body and leave the server up."""
from __future__ import annotations


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height over a few bytes of pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0\0\0\0")) + chunk(b"IEND", b""))


def malformed_requests(vocab: int, max_sequence_length: int, max_batch_size: int, max_body_bytes: int):
    """A battery of bad requests: (id, method, path, httpx kwargs, expected status or None for
    any 4xx). Every one must get a 4xx with an {"error": ...} body and leave the server up."""
    import gzip
    import io
    import json as _json

    mb, lm = "/v2/models/mobilenet_v2/infer", "/v2/models/lfm2/infer"

    def img(shape=(1, 3, 224, 224), **kw):
        t = {"name": "input", "shape": list(shape), "datatype": "FP32", "data": [0.0]}
        t.update(kw)
        return {"inputs": [t]}

    def ids(data, shape=None, **kw):
        t = {"name": "input_ids", "shape": shape or [1, len(data)], "datatype": "INT64", "data": data}
        t.update(kw)
        return {"inputs": [t]}

    def binary(request: dict, tail: bytes, header=None):
        head = _json.dumps(request).encode()
        return {"content": head + tail, "headers": {"Inference-Header-Content-Length": str(header if header is not None else len(head)),
                                                    "Content-Type": "application/octet-stream"}}

    bin_ids = {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
    png = io.BytesIO()
    try:
        from PIL import Image
        Image.new("RGB", (8, 8)).save(png, format="PNG")
    except ImportError:  # pragma: no cover
        pass
    P = lambda path, status=None, **kw: (path, status, kw)  # noqa: E731
    cases = {
        "bad-json": P(mb, 400, content=b"{not json"),
        "empty-body": P(mb, 400, content=b""),
        "json-array": P(mb, 400, content=b"[]"),
        "deep-nesting": P(mb, 400, content=b"[" * 50_000),
        "no-inputs": P(mb, 400, json={}),
        "empty-inputs": P(mb, 400, json={"inputs": []}),
        "unknown-field": P(mb, 400, json={**img(), "bogus": 1}),
        "wrong-input-name": P(mb, 400, json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}),
        "wrong-dtype": P(mb, 400, json=img(shape=(1,), datatype="FP64")),
        "unknown-dtype": P(mb, 400, json=img(shape=(1,), datatype="FOO")),
        "wrong-rank": P(mb, 400, json=img(shape=(3,), data=[0, 0, 0])),
        "wrong-fixed-dim": P(lm, 400, **binary({"inputs": [{**bin_ids, "shape": [1, 1, 2]}]}, b"\0" * 16)),
        "shape-data-mismatch": P(mb, 400, json=img()),
        "huge-declared-shape": P(mb, 400, json=img(shape=(10**6, 3, 224, 224))),
        "negative-dim": P(mb, 400, json=img(shape=(-1, 3, 224, 224))),
        "non-int-shape": P(mb, 400, json=img(shape=("a",))),
        "string-data": P(lm, 400, json=ids(["a", "b"])),
        "nan-data": P(mb, 400, content=b'{"inputs":[{"name":"input","shape":[1,1,1,1],"datatype":"FP32","data":[NaN]}]}'),
        "infinity-literal": P(mb, 400, content=b'{"inputs":[{"name":"input","shape":[1,1,1,1],"datatype":"FP32","data":[Infinity]}]}'),
        "number-past-double": P(mb, 400, content=b'{"inputs":[{"name":"input","shape":[1,1,1,1],"datatype":"FP32","data":[1e400]}]}'),
        "float-token-ids": P(lm, 400, json=ids([1.5, 2.0])),
        "out-of-vocab": P(lm, 400, json=ids([1, vocab + 5])),
        "negative-token": P(lm, 400, json=ids([-3, 1])),
        "int64-overflow": P(lm, 400, json=ids([2**70, 1])),
        "int64-one-past-max": P(lm, 400, json=ids([2**63, 1])),
        "int64-one-past-min": P(lm, 400, json=ids([-2**63 - 1, 1])),
        "shape-product-past-int64": P(lm, 400, json=ids([1], shape=[2**62, 2**62])),
        "zero-dim-hides-huge-dim": P(lm, 400, json=ids([], shape=[0, 2**62])),
        "too-long-sequence": P(lm, 400, json=ids([1] * (max_sequence_length + 1))),
        "batch-over-limit": P(lm, 400, json=ids([1] * (max_batch_size + 1), shape=[max_batch_size + 1, 1])),
        "zero-batch": P(lm, 400, json=ids([], shape=[0, 3])),
        "bad-impl-name": P(lm, 400, json={**ids([1, 2]), "parameters": {"depthwise_impl": "warp_speed"}}),
        "impl-not-string": P(lm, 400, json={**ids([1, 2]), "parameters": {"depthwise_impl": 3}}),
        "timeout-negative": P(lm, 400, json={**ids([1, 2]), "parameters": {"timeout": -1}}),
        "timeout-not-int": P(lm, 400, json={**ids([1, 2]), "parameters": {"timeout": "1s"}}),
        "unknown-output": P(lm, 400, json={**ids([1, 2]), "outputs": [{"name": "nope"}]}),
        "binary-output-not-bool": P(lm, 400, json={**ids([1, 2]), "parameters": {"binary_data_output": "yes"}}),
        "bin-header-not-int": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header="ten")),
        "bin-header-past-end": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header=10**6)),
        "bin-header-negative": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header=-5)),
        "bin-size-not-int": P(lm, 400, **binary({"inputs": [{**bin_ids, "parameters": {"binary_data_size": 16.0}}]}, b"\0" * 16)),
        "bin-huge-shape-tiny-data": P(lm, 400, **binary({"inputs": [{**bin_ids, "shape": [2**31, 2**31]}]}, b"\0" * 16)),
        "bin-size-wrong": P(lm, 400, **binary({"inputs": [{**bin_ids, "parameters": {"binary_data_size": 12}}]}, b"\0" * 12)),
        "bin-truncated": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 8)),
        "bin-trailing-bytes": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 24)),
        "bin-header-cuts-json": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header=5)),
        "unknown-model": P("/v2/models/resnet/infer", 404, json=ids([1])),
        "unknown-version": P("/v2/models/lfm2/versions/7/infer", 404, json=ids([1])),
        "text-content-type": P(lm, 415, content=b"hello", headers={"Content-Type": "text/plain"}),
        "form-not-json": P(lm, 400, data={"a": "b"}),
        "multipart-content-type": P(lm, 415, files={"file": ("x.json", b"{}", "application/json")}),
        "unknown-encoding": P(lm, 415, content=b"xx", headers={"Content-Encoding": "br"}),
        "broken-gzip": P(lm, 400, content=b"not gzip", headers={"Content-Encoding": "gzip"}),
        "gzip-bomb": P(lm, 413, content=gzip.compress(b" " * (max_body_bytes + 10)), headers={"Content-Encoding": "gzip"}),
        "gzip-truncated": P(lm, 400, content=gzip.compress(_json.dumps(ids([1, 2])).encode())[:-6],
                            headers={"Content-Encoding": "gzip"}),
        "generate-gzip-bomb": P("/v1/generate", 413, content=gzip.compress(b" " * (max_body_bytes + 10)),
                                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}),
        "generate-deep-nesting": P("/v1/generate", 400, content=b"[" * 50_000, headers={"Content-Type": "application/json"}),
        "oversized-body": P(mb, 413, content=b" " * (max_body_bytes + 1)),
        "generate-both-inputs": P("/v1/generate", 400, json={"prompt": "a", "input_ids": [1]}),
        "generate-no-input": P("/v1/generate", 400, json={"max_new_tokens": 2}),
        "generate-absurd-max-new": P("/v1/generate", 400, json={"prompt": "a", "max_new_tokens": 10**9}),
        "generate-negative-temp": P("/v1/generate", 422, json={"prompt": "a", "temperature": -1}),
        "generate-top-p-zero": P("/v1/generate", 422, json={"prompt": "a", "top_p": 0}),
        "generate-repetition-penalty-zero": P("/v1/generate", 422, json={"prompt": "a", "repetition_penalty": 0}),
        "generate-min-tokens-over-max": P("/v1/generate", 400, json={"prompt": "a", "max_new_tokens": 2,
                                                                     "min_tokens": 3}),
        "generate-stop-id-out-of-vocab": P("/v1/generate", 400, json={"prompt": "a", "stop_token_ids": [vocab]}),
        "generate-out-of-vocab": P("/v1/generate", 400, json={"input_ids": [vocab + 1]}),
        "generate-empty-ids": P("/v1/generate", 400, json={"input_ids": []}),
        "generate-bad-impl": P("/v1/generate", 422, json={"prompt": "a", "depthwise_impl": "turbo"}),
        "completions-too-many-choices": P("/v1/completions", 400, json={"prompt": "a", "n": 1000}),
        "completions-no-prompt": P("/v1/completions", 400, json={"max_tokens": 2}),
        "completions-unknown-field": P("/v1/completions", 400, json={"prompt": "a", "max_token": 2}),
        "completions-unknown-model": P("/v1/completions", 404, json={"model": "gpt-x", "prompt": "a"}),
        "completions-empty-ids": P("/v1/completions", 400, json={"prompt": []}),
        "completions-huge-max-tokens": P("/v1/completions", 400, json={"prompt": "a", "max_tokens": 10**9}),
        "chat-no-messages": P("/v1/chat/completions", 400, json={"messages": []}),
        "chat-bad-role": P("/v1/chat/completions", 400, json={"messages": [{"role": "robot", "content": "a"}]}),
        "chat-tools": P("/v1/chat/completions", 400, json={"messages": [{"role": "user", "content": "a"}],
                                                           "tools": [{"type": "function", "function": {"name": "f"}}]}),
        "chat-image-part": P("/v1/chat/completions", 400, json={"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}]}),
        "chat-content-number": P("/v1/chat/completions", 400, json={"messages": [{"role": "user", "content": 5}]}),
        "generate-stream-not-bool": P("/v1/generate", 422, json={"prompt": "a", "stream": "perhaps"}),
        "generate-not-json": P("/v1/generate", 422, content=b"prompt=a", headers={"Content-Type": "text/plain"}),
        "generate-prompt-number": P("/v1/generate", 422, json={"prompt": 5}),
        "generate-huge-prompt": P("/v1/generate", 400, json={"prompt": "a" * (max_sequence_length + 5)}),
        "classify-not-image": P("/v1/classify", 400, files={"file": ("a.txt", b"hello, not an image", "text/plain")}),
        "classify-truncated-png": P("/v1/classify", 400, files={"file": ("a.png", png.getvalue()[:30], "image/png")}),
        "classify-empty-file": P("/v1/classify", 400, files={"file": ("a.png", b"", "image/png")}),
        "classify-svg": P("/v1/classify", 400, files={"file": ("a.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml")}),
        "classify-pixel-bomb": P("/v1/classify", 400, files={"file": ("a.png", _png_claiming(100_000, 100_000), "image/png")}),
        "classify-no-file-part": P("/v1/classify", 422, files={"image": ("a.png", png.getvalue(), "image/png")}),
        "classify-no-file": P("/v1/classify", 422, json={"file": "x"}),
        "classify-top-k-zero": P("/v1/classify?top_k=0", 422, files={"file": ("a.png", png.getvalue(), "image/png")}),
        "classify-bad-impl": P("/v1/classify?depthwise_impl=nope", 422, files={"file": ("a.png", png.getvalue(), "image/png")}),
    }
    return [(name, "POST", path, kw, status) for name, (path, status, kw) in cases.items()]
