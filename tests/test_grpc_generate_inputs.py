"""The generation inputs of a gRPC request (service/grpc_generate.parse), checked without a
server: a request is read one way only, as OIP inference's are (grpc_codec.decode_request).
When raw_input_contents is used, a tensor that also carries typed `contents` is ambiguous
(which of its two values is the prompt?) and refused naming it, not read from one silently."""
import struct

import pytest

pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402

from service.codec import CodecError  # noqa: E402
from service.grpc_generate import parse  # noqa: E402


def _raw(text: bytes) -> bytes:
    return struct.pack("<I", len(text)) + text


def _request(typed_too: str = "") -> pb.ModelInferRequest:
    """text_input "Hi" and max_tokens 3, both raw; typed_too names an input that also gets
    typed contents."""
    request = pb.ModelInferRequest(model_name="lfm2")
    text = request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(_raw(b"Hi"))
    tokens = request.inputs.add(name="max_tokens", datatype="INT32", shape=[1])
    request.raw_input_contents.append(struct.pack("<i", 3))
    if typed_too == "text_input":
        text.contents.bytes_contents.append(b"something else")
    elif typed_too == "max_tokens":
        tokens.contents.int_contents.append(7)
    return request


def test_raw_inputs_are_read():
    generation = parse(_request(), max_elements=1 << 20)
    assert generation.body.text_input == "Hi"


@pytest.mark.parametrize("name", [pytest.param("text_input", id="bytes"), pytest.param("max_tokens", id="int32")])
def test_raw_and_typed_contents_together_are_refused(name):
    with pytest.raises(CodecError, match=rf"input '{name}': raw_input_contents is used, so `contents` must be empty"):
        parse(_request(typed_too=name), max_elements=1 << 20)


def _sampled(sampling: str, stream_input=None, stream_parameter=None) -> pb.ModelInferRequest:
    """text_input "Hi" and sampling_parameters, typed; optionally a stream input or parameter."""
    request = pb.ModelInferRequest(model_name="lfm2")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"Hi")
    request.inputs.add(name="sampling_parameters", datatype="BYTES",
                       shape=[1]).contents.bytes_contents.append(sampling.encode())
    if stream_input is not None:
        request.inputs.add(name="stream", datatype="BOOL", shape=[1]).contents.bool_contents.append(stream_input)
    if stream_parameter is not None:
        request.parameters["stream"].bool_param = stream_parameter
    return request


@pytest.mark.parametrize("sampling, stream_input, stream_parameter, expected", [
    pytest.param('{"stream": true, "max_tokens": 4}', None, None, True, id="sampling-parameters-only"),
    pytest.param('{"stream": false}', None, None, False, id="sampling-parameters-false"),
    pytest.param('{"stream": true}', False, None, False, id="the-input-wins"),
    pytest.param('{"stream": true}', None, False, False, id="the-request-parameter-wins"),
    pytest.param('{"max_tokens": 4}', None, None, False, id="absent-not-streamed"),
])
def test_stream_in_sampling_parameters_is_read(sampling, stream_input, stream_parameter, expected):
    """`stream` in sampling_parameters (a JSON string, as some vLLM-backend clients put it) was
    ignored: one response where the client asked for a stream. It counts where neither the
    `stream` input nor the request's `stream` parameter says otherwise."""
    assert parse(_sampled(sampling, stream_input, stream_parameter), max_elements=1 << 20).stream is expected


def test_stream_in_sampling_parameters_must_be_a_boolean():
    with pytest.raises(ValueError, match="stream: expected a boolean"):
        parse(_sampled('{"stream": "yes"}'), max_elements=1 << 20)


def _typed_text(shape, extra: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="lfm2")
    text = request.inputs.add(name="text_input", datatype="BYTES", shape=shape)
    text.contents.bytes_contents.append(b"Hi")
    if extra:
        getattr(text.contents, extra).append(7)
    return request


@pytest.mark.parametrize("shape", [[1], [1, 1]])
def test_text_input_of_shape_1_or_1x1_is_read(shape):
    assert parse(_typed_text(shape), max_elements=1 << 20).body.text_input == "Hi"


@pytest.mark.parametrize("shape", [[1, 1, 1], [1, 1, 1, 1]])
def test_text_input_of_another_shape_is_refused_as_the_readme_says(shape):
    with pytest.raises(CodecError, match=r"input 'text_input': expected one value \(shape \[1\] or \[1, 1\]\), got "
                                         rf"shape \[{', '.join(map(str, shape))}\]"):
        parse(_typed_text(shape), max_elements=1 << 20)


def test_bytes_text_input_with_other_typed_contents_is_refused_as_inference_refuses_it():
    """Its int_contents were ignored: which of the two is the prompt is the client's to say."""
    with pytest.raises(CodecError, match=r"input 'text_input': BYTES values go in contents.bytes_contents, "
                                         r"got \['int_contents'\]"):
        parse(_typed_text([1], extra="int_contents"), max_elements=1 << 20)
