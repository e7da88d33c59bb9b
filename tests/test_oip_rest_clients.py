"""OIP v2 REST requests exactly as the clients other than tritonclient build them, against the
app in this process (fake models): KServe's python SDK (kserve.InferRequest.to_rest, which its
InferenceRESTClient posts) and its reading of the reply (InferResponse.from_bytes). The request
bodies are written out here as that code writes them, so the test needs no kserve install."""
import json
import uuid

import numpy as np

import inprocess_app
from error_bodies import error_message

served = inprocess_app.served   # this module's client: fake models, LIMITS

IDS = np.array([[1, 2, 3]], dtype=np.int64)


def _kserve_body(binary: bool) -> tuple[bytes, dict]:
    """KServe's InferRequest(model_name="lfm2", infer_inputs=[...]).to_rest() and the headers
    InferenceRESTClient.infer adds: `id` (a uuid4 when none is given) and `model_name` always
    in the JSON; a binary input's bytes after it, its length in Inference-Header-Content-Length."""
    tensor = {"name": "input_ids", "shape": list(IDS.shape), "datatype": "INT64"}
    if binary:
        tensor["parameters"] = {"binary_data_size": IDS.nbytes}
    else:
        tensor["data"] = IDS.reshape(-1).tolist()
    head = json.dumps({"id": str(uuid.uuid4()), "model_name": "lfm2", "inputs": [tensor]}).encode()
    if not binary:
        return head, {}
    return head + IDS.tobytes(), {"inference-header-content-length": str(len(head)),
                                  "content-type": "application/octet-stream"}


def _from_bytes(response) -> dict[str, np.ndarray]:
    """KServe's InferResponse.from_bytes: the JSON up to Inference-Header-Content-Length (the
    whole body without it), then each binary output's bytes in order."""
    raw = response.content
    end = int(response.headers.get("inference-header-content-length", len(raw)))
    head, out, at = json.loads(raw[:end]), {}, end
    for tensor in head["outputs"]:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[tensor["name"]] = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        else:
            out[tensor["name"]] = np.frombuffer(raw[at:at + size], dtype=np.float32).reshape(tensor["shape"])
            at += size
    return out


def test_kserve_sdk_request_with_model_name_is_served(served):
    """KServe's SDK puts `model_name` in every REST request body; its own server (pydantic,
    extra fields ignored) and Triton ignore it, the URL names the model. It was a 400
    'model_name: Extra inputs are not permitted', so KServe's client could not call dwserve."""
    client, _ = served
    want = np.eye(96, dtype=np.float32)[[4]]          # the fake LM: one-hot of last id + 1
    for binary in (False, True):
        body, headers = _kserve_body(binary)
        r = client.post("/v2/models/lfm2/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(_from_bytes(r)["logits"], want)
        assert r.json()["id"] == json.loads(body[:len(body) - IDS.nbytes * binary])["id"]


def test_other_unknown_request_fields_are_still_refused(served):
    """Only the field a client is known to send is let through: a misspelt one ('output' for
    'outputs') still says which, rather than being silently dropped."""
    client, _ = served
    body = {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}],
            "output": [{"name": "logits"}]}
    r = client.post("/v2/models/lfm2/infer", json=body)
    assert r.status_code == 400 and "output" in error_message(r), r.text
