"""More images than DWSERVE_MAX_BATCH_SIZE in one request: 9 images over a limit of 8 were
refused naming DWSERVE_MAX_ELEMENTS (8 images' worth by default, so also exceeded), a setting
that was not the cause. Every front end that takes image tensors names the batch limit."""
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service import grpc_codec
from service.app import create_app
from service.codec import CodecError
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from tests.server_process import client_ready

pb = pytest.importorskip("tritonclient.grpc.service_pb2")

BATCH = 8
WANT = ("input 'input': 9 images, at most 8 per request", "DWSERVE_MAX_BATCH_SIZE", "--max-batch-size")


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_batch_size=BATCH, warmup=False), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield client_ready(c)


def _says_batch(message: str):
    assert all(w in message for w in WANT) and "MAX_ELEMENTS" not in message, message


@pytest.mark.parametrize("rows", [9, 5 + BATCH])
def test_rest_binary_infer_names_the_batch_limit(client, rows):
    x = np.zeros((rows, 3, 224, 224), np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    r = client.post("/v2/models/mobilenet_v2/infer", content=head + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400, r.text
    _says_batch(r.json()["error"].replace(f"{rows} images", "9 images"))


def test_rest_json_infer_names_the_batch_limit(client):
    shape = [9, 3, 224, 224]
    r = client.post("/v2/models/mobilenet_v2/infer", json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": shape, "data": [0] * int(np.prod(shape))}]})
    assert r.status_code == 400, r.text
    _says_batch(r.json()["error"])


def test_grpc_infer_names_the_batch_limit():
    request = pb.ModelInferRequest(model_name="mobilenet_v2")
    request.inputs.add(name="input", datatype="FP32", shape=[9, 3, 224, 224])
    request.raw_input_contents.append(np.zeros((9, 3, 224, 224), np.float32).tobytes())
    with pytest.raises(CodecError) as exc:
        grpc_codec.decode_request(request, 8 * 3 * 224 * 224, BATCH)
    _says_batch(str(exc.value))


def test_within_the_element_limit_the_handler_says_the_same(client):
    """5 small images under a batch limit of 4: past codec, the handler's check, same words."""
    app = create_app(Settings(max_batch_size=4, warmup=False), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as c:
        client_ready(c)
        x = np.zeros((5, 3, 224, 224), np.float32)
        r = c.post("/v2/models/mobilenet_v2/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})
    assert r.status_code == 400 and "5 images, at most 4 per request" in r.json()["error"], r.text
