"""OIP v2 gRPC messages (service/grpc_codec.py) against tritonclient.grpc's own encoder and
decoder: raw and typed contents for every datatype, responses read back, malformed messages
as ValueErrors naming what was expected, and a fuzzer (decode or ValueError, nothing else).
The server side is tests/test_grpc_infer.py."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc._infer_result import InferResult  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402

from service.codec import DTYPES  # noqa: E402
from service.grpc_codec import CONTENTS_FIELD, decode_request, encode_response  # noqa: E402

MAX_ELEMENTS = 8 * 3 * 224 * 224


def _random(rng, datatype: str, shape) -> np.ndarray:
    dtype = DTYPES[datatype]
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _request(inputs, outputs=None, parameters=None, request_id="r1"):
    return _get_inference_request("m", inputs, "", request_id, outputs, 0, False, False, 0, None, parameters)


# --- codec -----------------------------------------------------------------------------------

@pytest.mark.parametrize("datatype", [pytest.param(d, id=d) for d in DTYPES])
def test_decode_matches_tritonclient_raw_encoding(datatype):
    rng = np.random.default_rng()
    shape = [int(rng.integers(1, 4)), int(rng.integers(1, 7))]
    x = _random(rng, datatype, shape)
    inp = gc.InferInput("x", shape, datatype)
    inp.set_data_from_numpy(x)
    other = _random(rng, "FP32", [2])
    inp2 = gc.InferInput("y", [2], "FP32")
    inp2.set_data_from_numpy(other)
    wanted = [gc.InferRequestedOutput("out"), gc.InferRequestedOutput("top", class_count=5)]
    arrays, requested, params = decode_request(_request([inp, inp2], wanted, {"depthwise_impl": "native"}),
                                               MAX_ELEMENTS)
    assert arrays["x"].dtype == x.dtype and arrays["x"].shape == x.shape
    np.testing.assert_array_equal(arrays["x"], x)
    np.testing.assert_array_equal(arrays["y"], other)
    assert requested == [("out", True, None), ("top", True, 5)] and params["depthwise_impl"] == "native"


@pytest.mark.parametrize("datatype", [pytest.param(d, id=d) for d in CONTENTS_FIELD])
def test_decode_typed_contents(datatype):
    rng = np.random.default_rng()
    x = _random(rng, datatype, [2, 3])
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(x.reshape(-1).tolist())
    arrays, _, _ = decode_request(request, MAX_ELEMENTS)
    assert arrays["x"].dtype == DTYPES[datatype]
    np.testing.assert_array_equal(arrays["x"], x)


@pytest.mark.parametrize("datatype", [pytest.param(d, id=d) for d in ("FP32", "INT64", "FP16", "BOOL", "UINT8")])
def test_encode_is_read_back_by_tritonclient(datatype):
    rng = np.random.default_rng()
    a, b = _random(rng, datatype, [3, 5]), _random(rng, "FP32", [1, 7])
    response = encode_response("m", "id7", "slice_sum", [("a", a), ("b", b)])
    result = InferResult(response)
    np.testing.assert_array_equal(result.as_numpy("a"), a)
    np.testing.assert_array_equal(result.as_numpy("b"), b)
    assert result.get_response().id == "id7"
    assert result.get_response().parameters["depthwise_impl"].string_param == "slice_sum"


def _typed(datatype, shape, field, values):
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def _raw(shapes_and_blobs, datatype="FP32", extra_blobs=()):
    request = pb.ModelInferRequest(model_name="m")
    for i, (shape, blob) in enumerate(shapes_and_blobs):
        request.inputs.add(name=f"x{i}", datatype=datatype, shape=shape)
        request.raw_input_contents.append(blob)
    request.raw_input_contents.extend(extra_blobs)
    return request


def _both():
    request = _raw([([2], b"\0" * 8)])
    request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    return request


def _twice():
    request = _raw([([1], b"\0" * 4)])
    request.inputs.add(name="x0", datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"\0" * 4)
    return request


MALFORMED = [
    ("raw_count", lambda: _raw([([2], b"\0" * 8)], extra_blobs=[b"\0"]), "raw_input_contents has 2 entries for 1 inputs"),
    ("raw_size", lambda: _raw([([2, 3], b"\0" * 20)]), "must be 24 bytes"),
    ("raw_and_contents", _both, "contents` must be empty"),
    ("fp16_typed", lambda: _typed("FP16", [1], "fp32_contents", [1.0]), "raw_input_contents"),
    ("typed_count", lambda: _typed("FP32", [2, 2], "fp32_contents", [1.0] * 3), "needs 4 values"),
    ("typed_field", lambda: _typed("INT64", [2], "fp32_contents", [1.0, 2.0]), "contents.int64_contents"),
    ("int8_range", lambda: _typed("INT8", [2], "int_contents", [1, 300]), "out of range for INT8"),
    ("bytes_type", lambda: _typed("BYTES", [1], "bytes_contents", [b"a"]), "unsupported"),
    ("duplicate", _twice, "appears twice"),
    ("too_many", lambda: _raw([([MAX_ELEMENTS + 1], b"")]), "the limit is"),
    ("negative_dim", lambda: _raw([([-2], b"")]), ">= 0"),
    # a 0 dim makes the product 0; each dim is still bounded, naming the input (numpy said
    # "array is too big" before)
    ("zero_times_huge_raw", lambda: _raw([([0, 2**63 - 1], b"")]), "input 'x0': shape [0, 9223372036854775807] "
                                                                    "has a dimension over the limit"),
    ("zero_times_huge_typed", lambda: _typed("INT64", [2**62, 0], "int64_contents", []),
     "input 'x': shape .* at most"),
]


@pytest.mark.parametrize("build,message", [pytest.param(b, m, id=i) for i, b, m in MALFORMED])
def test_malformed_requests_name_what_was_expected(build, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("`", "`")):
        decode_request(build(), MAX_ELEMENTS)


# --- fuzz ------------------------------------------------------------------------------------


_TYPES = [*DTYPES, "BYTES", "BF16", "", "fp32"]
_tensor = st.fixed_dictionaries({
    "name": st.sampled_from(["input", "input_ids", "x", ""]),
    "datatype": st.sampled_from(_TYPES),
    "shape": st.lists(st.integers(-3, 3000), max_size=5),
    "raw": st.one_of(st.none(), st.binary(max_size=64)),
    "values": st.one_of(st.none(), st.lists(st.integers(-2**63, 2**64 - 1), max_size=8),
                        st.lists(st.floats(allow_nan=True), max_size=8), st.lists(st.booleans(), max_size=8)),
})


def _fuzzed_request(tensors, raw_extra, impl):
    request = pb.ModelInferRequest(model_name="mobilenet_v2")
    for t in tensors:
        tensor = request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if t["raw"] is not None:
            request.raw_input_contents.append(t["raw"])
        elif t["values"] is not None:
            field = {int: "int64_contents", float: "fp64_contents", bool: "bool_contents"}[type(t["values"][0])] \
                if t["values"] else "fp32_contents"
            values = [v for v in t["values"] if field != "int64_contents" or -2**63 <= v < 2**63]
            getattr(tensor.contents, field).extend(values)
    request.raw_input_contents.extend(raw_extra)
    if impl is not None:
        request.parameters["depthwise_impl"].string_param = impl
    return request


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_tensor, max_size=3), st.lists(st.binary(max_size=8), max_size=2),
       st.sampled_from([None, "auto", "nope", ""]))
def test_fuzzed_requests_decode_or_raise_value_error(tensors, raw_extra, impl):
    """Whatever the message holds, decoding gives arrays of the declared shapes and types or a
    ValueError; nothing else escapes (which the server would answer with INTERNAL)."""
    request = _fuzzed_request(tensors, raw_extra, impl)
    try:
        arrays, _, params = decode_request(request, MAX_ELEMENTS)
    except ValueError:
        return
    for t in request.inputs:
        assert arrays[t.name].shape == tuple(t.shape) and arrays[t.name].dtype == DTYPES[t.datatype]
    assert params.get("depthwise_impl") == impl
