"""gRPC compression (service/grpc_server.py): --grpc-infer-response-compression-level (Triton's
flag) compresses responses on the wire, and requests a client compressed (tritonclient's
`compression_algorithm`) are taken at every level. What crosses the wire is counted by a
loopback TCP relay between client and server: grpc hides the encoding from both ends (no
grpc-encoding in either side's metadata), so bytes are the one observable that can fail.
In-process server, fake models."""
import contextlib
import socket
import threading

import numpy as np
import pytest
import torch

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402

from service import cli  # noqa: E402
from service.testing import reference_logits  # noqa: E402
from tests.grpc_fake_server import grpc_server  # noqa: E402
import cli_capture  # noqa: E402

captured = cli_capture.captured
ROWS = 8   # the logits: ROWS x 1000 FP32 = 32000 bytes, rows alike (one image repeated) so gzip halves them at least


class Relay:
    """A loopback TCP relay to `port` counting the bytes each way: `up` client -> server,
    `down` server -> client. A byte is counted before it is passed on, so once a call has
    returned its reply's bytes are all in `down`."""

    def __init__(self, port: int):
        self.up = self.down = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port, self._target = self._listener.getsockname()[1], port
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        with contextlib.suppress(OSError):   # the listener closed: done
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._target))
                self._sockets += [client, server]
                threading.Thread(target=self._pipe, args=(client, server, "up"), daemon=True).start()
                threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str):
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self):
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def relayed(level=None):
    """A server at `level` (None: the default) -> (relay, models)."""
    settings = {} if level is None else {"grpc_infer_response_compression_level": level}
    with grpc_server(warmup=False, **settings) as (target, _, models):
        relay = Relay(int(target.rsplit(":", 1)[1]))
        try:
            yield relay, models
        finally:
            relay.close()


def _images():
    """ROWS alike images of 4 grey levels: compressible, as a photo's pixels / 255 are."""
    one = (np.random.default_rng(0).integers(0, 4, (1, 3, 224, 224)) / 3).astype(np.float32)
    return np.repeat(one, ROWS, axis=0)


def _infer(relay, compression=None):
    """ModelInfer through the relay -> (logits, bytes up, bytes down) of that call alone."""
    client = gc.InferenceServerClient(f"127.0.0.1:{relay.port}")
    assert client.is_server_live()   # the connection's setup, outside the counts below
    inp = gc.InferInput("input", [ROWS, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(_images())
    up, down = relay.up, relay.down
    logits = client.infer("mobilenet_v2", [inp], compression_algorithm=compression).as_numpy("logits")
    client.close()
    return logits, relay.up - up, relay.down - down


@pytest.fixture(scope="module")
def uncompressed():
    with relayed() as (relay, models):
        logits, _, down = _infer(relay)
        want = reference_logits(torch.from_numpy(_images()), models["mobilenet_v2"].weight).numpy()
        yield logits, down, want


def test_responses_are_not_compressed_by_default(uncompressed):
    logits, down, want = uncompressed
    assert down >= logits.nbytes, (down, logits.nbytes)   # the logits' bytes, as they are
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", ["none", "low", "medium", "high"])
def test_a_level_compresses_responses_on_the_wire_and_the_tensors_decode_the_same(level, uncompressed):
    """Off by default and at 'none'; at low/medium/high the reply crosses the wire in well under
    half its bytes, and decodes to the very logits the uncompressed reply carried."""
    plain, plain_down, want = uncompressed
    with relayed(level) as (relay, _):
        logits, _, down = _infer(relay)
    np.testing.assert_array_equal(logits, plain)
    if level == "none":
        assert down >= logits.nbytes, (down, logits.nbytes)
    else:
        assert down < logits.nbytes / 2 and down < plain_down / 2, (down, plain_down)


def test_stream_answers_are_compressed_too():
    """ModelStreamInfer's answers go out at the level as ModelInfer's do."""
    images = _images()
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(images.shape))
    request = pb.ModelInferRequest(model_name="mobilenet_v2", id="s1", inputs=[tensor],
                                   raw_input_contents=[images.tobytes()])
    got = {}
    for level in ("none", "low"):
        with relayed(level) as (relay, _):
            with grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                stub.ServerLive(pb.ServerLiveRequest(), timeout=30)
                down = relay.down
                (answer,) = list(stub.ModelStreamInfer(iter([request]), timeout=30))
                got[level] = (answer.infer_response.raw_output_contents[0], relay.down - down)
    assert answer.error_message == "" and answer.infer_response.id == "s1"
    (plain, plain_down), (packed, packed_down) = got["none"], got["low"]
    assert packed == plain and len(plain) == ROWS * 1000 * 4
    assert plain_down >= len(plain) and packed_down < plain_down / 2, (plain_down, packed_down)


# grpc's channel option: the algorithms a client accepts (grpc-accept-encoding), a bit each
IDENTITY, DEFLATE, GZIP = 1, 2, 4


@pytest.mark.parametrize("level", ["low", "medium", "high"])
def test_a_level_compresses_only_as_the_client_accepts(level):
    """A level picks among the algorithms the client lists (grpc-accept-encoding): one that
    takes only gzip, or only deflate, gets it at every level; one that takes neither gets
    the reply as it is, never bytes it cannot read."""
    images = _images()
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(images.shape))
    request = pb.ModelInferRequest(model_name="mobilenet_v2", inputs=[tensor], raw_input_contents=[images.tobytes()])
    size = ROWS * 1000 * 4
    with relayed(level) as (relay, _):
        for accepted, compressed in ((IDENTITY | GZIP, True), (IDENTITY | DEFLATE, True), (IDENTITY, False)):
            options = [("grpc.compression_enabled_algorithms_bitset", accepted)]
            with grpc.insecure_channel(f"127.0.0.1:{relay.port}", options=options) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                stub.ServerLive(pb.ServerLiveRequest(), timeout=30)
                down = relay.down
                reply = stub.ModelInfer(request, timeout=30)
                down = relay.down - down
            assert len(reply.raw_output_contents[0]) == size
            assert (down < size / 2) if compressed else (down >= size), (accepted, down)


@pytest.mark.parametrize("level", ["none", "high"])
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_requests_a_client_compressed_are_taken(algorithm, level, uncompressed):
    """tritonclient's compression_algorithm compresses the request (under half the images'
    bytes go up), and the server decodes it to the same logits."""
    plain, _, _ = uncompressed
    with relayed(level) as (relay, _):
        logits, up, _ = _infer(relay, compression=algorithm)
    assert up < _images().nbytes / 2, up
    np.testing.assert_array_equal(logits, plain)


def test_the_flag_and_its_variable(monkeypatch, captured, capsys):
    monkeypatch.setenv("DWSERVE_GRPC_INFER_RESPONSE_COMPRESSION_LEVEL", "medium")
    assert cli.main(["serve"]) == 0
    assert captured["settings"].grpc_infer_response_compression_level == "medium"
    assert cli.main(["serve", "--grpc-infer-response-compression-level", "low"]) == 0
    assert captured["settings"].grpc_infer_response_compression_level == "low"
    monkeypatch.setenv("DWSERVE_GRPC_INFER_RESPONSE_COMPRESSION_LEVEL", "max")
    assert cli.main(["serve"]) == 2
    assert ("DWSERVE_GRPC_INFER_RESPONSE_COMPRESSION_LEVEL='max': expected one of none, low, medium, high"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):   # argparse's choices
        cli.main(["serve", "--grpc-infer-response-compression-level", "9"])
