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
