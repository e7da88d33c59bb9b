"""service.codec against an independent reference: tritonclient's own request/response
encoding (the client every OIP v2 user has), on fresh random tensors of every dtype."""
import json

import numpy as np
import pytest

from service import codec

tc_http = pytest.importorskip("tritonclient.http")
from tritonclient.http._utils import _get_inference_request  # noqa: E402

DTYPE_CASES = [pytest.param(name, id=name) for name in codec.DTYPES]


def _random(datatype, shape, rng):
    dt = codec.DTYPES[datatype]
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _client_request(arrays, binary):
    inputs = []
    for name, arr in arrays.items():
        inp = tc_http.InferInput(name, list(arr.shape), codec.DATATYPE_OF[arr.dtype.newbyteorder("=")])
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    body, json_size = _get_inference_request(inputs, "", None, 0, False, False, 0, None, None)
    return (body if isinstance(body, bytes) else body.encode()), json_size


@pytest.mark.parametrize("binary", [pytest.param(False, id="json"), pytest.param(True, id="binary")])
@pytest.mark.parametrize("datatype", DTYPE_CASES)
def test_decode_matches_tritonclient_encoding(datatype, binary):
    rng = np.random.default_rng()
    arrays = {"a": _random(datatype, (2, 3, 5), rng), "b": _random(datatype, (1, 7), rng)}
    body, json_size = _client_request(arrays, binary)
    head, tail = codec.split_body(body, None if json_size is None else str(json_size))
    decoded = codec.decode_inputs(json.loads(head), tail, max_elements=10_000)
    for name, arr in arrays.items():
        assert decoded[name].dtype == arr.dtype and decoded[name].shape == arr.shape
        np.testing.assert_array_equal(decoded[name], arr)


@pytest.mark.parametrize("binary", [pytest.param(False, id="json"), pytest.param(True, id="binary")])
@pytest.mark.parametrize("datatype", [pytest.param(d, id=d) for d in ("FP32", "INT64", "FP16", "UINT8")])
def test_encode_is_read_back_by_tritonclient(datatype, binary):
    rng = np.random.default_rng()
    out = {"logits": _random(datatype, (3, 11), rng), "extra": _random(datatype, (1,), rng)}
    body, json_len = codec.encode_outputs([(n, a, binary) for n, a in out.items()], {"model_name": "m"})
    assert (json_len is not None) == binary
    result = tc_http.InferResult.from_response_body(body, header_length=json_len)
    for name, arr in out.items():
        np.testing.assert_array_equal(result.as_numpy(name), arr)


def _req(**tensor):
    base = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
    return {"inputs": [{**base, **tensor}]}


BAD = [
    pytest.param(_req(shape=[2, 3]), b"", "needs 6 values", id="shape-data-mismatch"),
    pytest.param(_req(shape=[-1, 4]), b"", ">= 0", id="negative-dim"),
    pytest.param(_req(shape=[10**9, 10**9]), b"", "limit", id="huge-declared-shape"),
    pytest.param(_req(datatype="BYTES"), b"", "unsupported", id="bytes-dtype"),
    pytest.param(_req(datatype="INT64", data=[1.5, 2, 3, 4]), b"", "integers", id="float-into-int"),
    pytest.param(_req(datatype="INT8", data=[1, 2, 3, 400]), b"", "out of range", id="int-overflow"),
    pytest.param(_req(data=[[1, 2], [3]]), b"", "list of numbers", id="ragged"),
    pytest.param(_req(data=["a", "b", "c", "d"]), b"", "numbers", id="strings"),
    pytest.param(_req(data=None), b"", "expected 'data'", id="no-data"),
    pytest.param(_req(data=None, parameters={"binary_data_size": 15}), b"x" * 16, "must be 16", id="bin-size-wrong"),
    pytest.param(_req(data=None, parameters={"binary_data_size": 16}), b"x" * 8, "truncated", id="bin-truncated"),
    pytest.param(_req(data=None, parameters={"binary_data_size": 16}), b"x" * 20, "unexpected bytes", id="bin-trailing"),
    pytest.param(_req(parameters={"binary_data_size": 16}), b"x" * 16, "either", id="bin-and-data"),
    pytest.param({"inputs": [_req()["inputs"][0]] * 2}, b"", "twice", id="duplicate-input"),
]


@pytest.mark.parametrize("request_json, tail, message", BAD)
def test_malformed_tensors_raise_codec_error(request_json, tail, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.decode_inputs(request_json, tail, max_elements=1000)


@pytest.mark.parametrize("header, body", [
    pytest.param("abc", b"{}", id="not-int"), pytest.param("0", b"{}", id="zero"),
    pytest.param("99", b"{}", id="past-end"), pytest.param("-1", b"{}", id="negative")])
def test_bad_header_length(header, body):
    with pytest.raises(codec.CodecError, match="Inference-Header-Content-Length"):
        codec.split_body(body, header)


def test_deeply_nested_json_is_a_codec_error_not_recursion():
    with pytest.raises(codec.CodecError):
        codec.parse_json(b"[" * 100_000)


@pytest.mark.parametrize("raw", [pytest.param(b'{"a": NaN}', id="nan"), pytest.param(b'[Infinity]', id="inf"),
                                 pytest.param(b'{"a": 1', id="truncated"), pytest.param(b'\xff\xfe', id="not-utf8"),
                                 pytest.param(b'[' * 100000, id="deep-nesting")])
def test_parse_json_is_strict_with_either_parser(raw, monkeypatch):
    """orjson and the stdlib fallback refuse the same inputs with a CodecError (-> 400)."""
    with pytest.raises(codec.CodecError, match="expected valid UTF-8 JSON"):
        codec.parse_json(raw)
    monkeypatch.setattr(codec, "_loads", codec._stdlib_loads)
    with pytest.raises(codec.CodecError, match="expected valid UTF-8 JSON"):
        codec.parse_json(raw)
    assert codec.parse_json(b'{"a": [1, 2.5, -3e-2]}') == {"a": [1, 2.5, -0.03]}
