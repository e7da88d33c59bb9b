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
    # more bytes declared than the shape holds: not read as the shape's first 16 (the rest dropped)
    pytest.param(_req(data=None, parameters={"binary_data_size": 24}), b"x" * 24, "must be 16", id="bin-size-over"),
    pytest.param(_req(data=None, parameters={"binary_data_size": 16}), b"x" * 8, "truncated", id="bin-truncated"),
    pytest.param(_req(data=None, parameters={"binary_data_size": 16}), b"x" * 20, "unexpected bytes", id="bin-trailing"),
    pytest.param(_req(parameters={"binary_data_size": 16}), b"x" * 16, "either", id="bin-and-data"),
    pytest.param({"inputs": [_req()["inputs"][0]] * 2}, b"", "twice", id="duplicate-input"),
    # nested data must nest as the declared shape (flat data is the other accepted form)
    pytest.param(_req(shape=[1, 4], data=[[1, 2], [3, 4]]), b"", r"nested data has shape \[2, 2\], expected the declared "
                 r"shape \[1, 4\]", id="nested-transposed"),
    pytest.param(_req(shape=[1, 2], data=[[1], [2]]), b"", r"input 'x': nested data has shape \[2, 1\]", id="nested-wrong"),
    pytest.param(_req(shape=[2, 1, 2], data=[[1, 2], [3, 4]]), b"", "nested data has shape", id="nested-partly"),
    # booleans only for BOOL
    pytest.param(_req(datatype="INT64", data=[True, False, True, False]), b"", "INT64 data must be numbers, got true/false",
                 id="bools-into-int64"),
    pytest.param(_req(data=[1.5, True, 2.0, 3.0]), b"", "FP32 data must be numbers, got true/false", id="bool-among-floats"),
    pytest.param(_req(datatype="INT64", data=[[1, 2], [3, False]]), b"", "INT64 data must be numbers, got true/false",
                 id="bool-nested"),
    pytest.param(_req(datatype="BOOL", data=[True, 1, False, 0]), b"", "BOOL data must be true/false", id="ints-into-bool"),
    pytest.param(_req(shape=[2, 8], data=[[0.5] * 8, [0.25] * 7 + [True]]), b"", "FP32 data must be numbers, got true/false",
                 id="bool-among-few-zero-ones"),
    pytest.param(_req(shape=[16], data=[0, 1] * 7 + [1.0, False]), b"", "FP32 data must be numbers, got true/false",
                 id="bool-among-many-zero-ones"),
    # out of range, not "floats", whichever parser read the integer
    pytest.param(_req(datatype="INT64", data=[1, 2, 3, -2**63 - 1]), b"", "out of range for INT64", id="int64-below-min-int"),
    pytest.param(_req(datatype="INT64", data=[1, 2, 3, -9.223372036854776e18 * 1.5]), b"", "out of range for INT64",
                 id="int64-below-min-as-orjson-reads-it"),
    pytest.param(_req(datatype="UINT64", data=[1, 2, 3, 2**64]), b"", "out of range for UINT64", id="uint64-past-max"),
    pytest.param(_req(datatype="INT64", data=[1, 2, 3, 4.0]), b"", "INT64 data must be integers, got floats",
                 id="integral-float-into-int"),
    # each dimension bounded, naming the input, even when another one is 0
    pytest.param(_req(shape=[0, 2**63], data=[]), b"", r"input 'x': shape \[0, 9223372036854775808\] has a dimension "
                 r"over the limit.*at most 1000", id="zero-times-huge"),
    pytest.param(_req(shape=[0, 10**30], data=None, parameters={"binary_data_size": 0}), b"",
                 "input 'x': shape .* at most 1000", id="zero-times-huge-binary"),
    pytest.param(_req(shape=[0, 100, 100], data=[]), b"", "input 'x'.*at most 1000", id="zero-times-product-over"),
]


@pytest.mark.parametrize("request_json, tail, message", BAD)
def test_malformed_tensors_raise_codec_error(request_json, tail, message):
    with pytest.raises(codec.CodecError, match=message):
        codec.decode_inputs(request_json, tail, max_elements=1000)


@pytest.mark.parametrize("data, said", [
    pytest.param(["1", "2", "3", "4"], "strings", id="strings"),
    pytest.param([1, 2, 3, "a" * 30], "strings", id="a-long-string-among-numbers"),
    pytest.param([1, 2, 3, None], "null", id="null"),
    pytest.param([1, 2, 3, {}], "objects", id="object")])
def test_non_numbers_are_named_in_json_words_not_numpy_dtypes(data, said):
    """'got str672 values' (numpy's name for its 21-character unicode dtype) told a client
    nothing; the message names what the JSON held."""
    with pytest.raises(codec.CodecError) as info:
        codec.decode_inputs(_req(datatype="INT64", data=data), b"", max_elements=1000)
    message = str(info.value)
    assert "data must be numbers for INT64" in message and said in message, message
    assert "str" not in message.replace("strings", "") and "object values" not in message, message


@pytest.mark.parametrize("header, body", [
    pytest.param("abc", b"{}", id="not-int"), pytest.param("0", b"{}", id="zero"),
    pytest.param("99", b"{}", id="past-end"), pytest.param("-1", b"{}", id="negative"),
    pytest.param("+2", b"{}", id="plus-sign"), pytest.param(" 2 ", b"{}", id="spaces"),
    pytest.param("0_2", b"{}", id="underscore"), pytest.param("\u0662", b"{}", id="arabic-indic-digit"),
    pytest.param("\uff12", b"{}", id="fullwidth-digit"), pytest.param("9" * 5000, b"{}", id="5000-digits")])
def test_bad_header_length(header, body):
    with pytest.raises(codec.CodecError, match="Inference-Header-Content-Length: expected"):
        codec.split_body(body, header)


def test_header_length_in_ascii_digits_splits_the_body():
    assert codec.split_body(b'{"a": 1}xyz', "8") == (b'{"a": 1}', b"xyz")
    assert codec.split_body(b'{"a": 1}xyz', "008") == (b'{"a": 1}', b"xyz")
    for bad in ("+8", "\u0668"):   # int() takes both as 8
        with pytest.raises(codec.CodecError, match="ASCII digits only"):
            codec.split_body(b'{"a": 1}xyz', bad)


@pytest.mark.parametrize("data, shape", [
    pytest.param([1, 2, 3, 4, 5, 6], [2, 3], id="flat"),
    pytest.param([[1, 2, 3], [4, 5, 6]], [2, 3], id="nested-as-shape"),
    pytest.param([[[1], [2], [3]], [[4], [5], [6]]], [2, 3, 1], id="nested-3d"),
    pytest.param([], [0, 3], id="empty-flat"),
    pytest.param([[]], [1, 0], id="empty-nested"),
    pytest.param([7], [], id="scalar")])
def test_flat_or_exactly_nested_data_is_accepted(data, shape):
    arr = codec.decode_inputs(_req(shape=shape, data=data, datatype="INT64"), b"", max_elements=1000)["x"]
    assert arr.shape == tuple(shape) and arr.dtype == np.int64
    np.testing.assert_array_equal(arr.reshape(-1), np.asarray(data, dtype=np.int64).reshape(-1))


@pytest.mark.parametrize("data", [
    pytest.param([[0.0, 1.0] * 4, [1.0, 0.0] * 4], id="all-zero-ones"),
    pytest.param([[0.5] * 8, [0.25] * 7 + [1.0]], id="few-zero-ones"),
])
def test_zeros_and_ones_are_numbers_not_booleans(data):
    arr = codec.decode_inputs(_req(shape=[2, 8], data=data), b"", max_elements=100)["x"]
    np.testing.assert_array_equal(arr, np.asarray(data, dtype=np.float32))


def test_bool_data_is_read_for_bool_inputs():
    arr = codec.decode_inputs(_req(datatype="BOOL", data=[[True, False], [False, True]]), b"", max_elements=10)["x"]
    np.testing.assert_array_equal(arr, [[True, False], [False, True]])


@pytest.mark.parametrize("raw, message", [
    pytest.param(b'[1, 2, 3, -9223372036854775809]', "out of range for INT64", id="below-int64-min"),
    pytest.param(b'[1, 2, 3, 9223372036854775808]', "out of range for INT64", id="past-int64-max"),
    pytest.param(b'[1, 2, 3, 18446744073709551616]', "out of range for INT64", id="past-uint64-max"),
    pytest.param(b'[1, 2, 3, 1e400]', "valid UTF-8 JSON", id="1e400-overflows-a-double")])
def test_out_of_range_integers_with_either_parser(raw, message, monkeypatch):
    """orjson reads -2**63-1 as a float (-2.0**63, INT64's min), the stdlib as a Python int:
    both say 'out of range', not 'got floats'."""
    for loads in (codec._loads, codec._stdlib_loads):
        monkeypatch.setattr(codec, "_loads", loads)
        with pytest.raises(codec.CodecError, match=message):
            data = codec.parse_json(raw)
            codec.decode_inputs(_req(datatype="INT64", data=data), b"", max_elements=10)


def test_deeply_nested_json_is_a_codec_error_not_recursion():
    with pytest.raises(codec.CodecError):
        codec.parse_json(b"[" * 100_000)


@pytest.mark.parametrize("raw", [pytest.param(b'{"a": NaN}', id="nan"), pytest.param(b'[Infinity]', id="inf"),
                                 pytest.param(b'[1e400]', id="overflowing-double"),
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


def test_a_body_that_decompresses_to_exactly_the_limit_is_taken():
    """The limit is the largest size allowed (a 413 is only past it), for gzip and deflate."""
    import gzip
    import zlib
    raw = b"x" * 1000
    assert codec.decompress(gzip.compress(raw), "gzip", limit=1000) == raw
    assert codec.decompress(zlib.compress(raw), "deflate", limit=1000) == raw
    with pytest.raises(Exception, match="exceeds the limit of 999 bytes"):
        codec.decompress(gzip.compress(raw), "gzip", limit=999)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_big_endian_outputs_go_out_little_endian(binary):
    """The wire format is little-endian whatever the array's byte order (a '>f4' array was
    refused, or sent as its raw big-endian bytes)."""
    values = np.array([[1.5, -2.25, 3.0]], dtype=">f4")
    body, header_length = codec.encode_outputs([("y", values, binary)], {})
    head = json.loads(body[:header_length] if binary else body)
    (out,) = head["outputs"]
    assert out["datatype"] == "FP32" and out["shape"] == [1, 3]
    got = np.frombuffer(body[header_length:], dtype="<f4") if binary else np.array(out["data"], dtype="<f4")
    np.testing.assert_array_equal(got, values.reshape(-1).astype("<f4"))
