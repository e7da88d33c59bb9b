"""JSON nested past the stdlib parser's depth is bad input, a 400, on every route that reads
JSON itself: Triton's generate routes and the model-repository routes (pydantic refused it,
then the fallback parse for lone surrogates raised RecursionError: a 500 and a logged
traceback, 10 KB of '[' enough), and vLLM's sampling_parameters string over REST and gRPC."""
import json

import httpx
import numpy as np
import pytest

gc = pytest.importorskip("tritonclient.grpc")

from error_bodies import error_message  # noqa: E402
from tests import grpc_fake_server  # noqa: E402
from tests.grpc_fake_server import _code_and_message  # noqa: E402

served = grpc_fake_server.served
DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("path", ["/v2/models/lfm2/generate", "/v2/models/lfm2/generate_stream",
                                  "/v2/models/lfm2/versions/1/generate", "/v2/repository/index",
                                  "/v2/repository/models/lfm2/load", "/v2/repository/models/lfm2/unload"])
def test_a_deeply_nested_body_is_a_400(served, path):
    _, url, _ = served
    body = '{"text_input": "hi", "parameters": {"max_tokens": 2}, "x": ' + DEEP + "}"
    r = httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text[:300]
    assert "recursion" in error_message(r) or "nested" in error_message(r), r.text[:300]


def test_a_deeply_nested_sampling_parameters_string_is_a_400(served):
    target, url, _ = served
    r = httpx.post(f"{url}/v2/models/lfm2/generate", json={"text_input": "hi", "sampling_parameters": DEEP}, timeout=30)
    assert r.status_code == 400 and "sampling_parameters: JSON nested too deeply" in error_message(r), r.text[:300]
    text = gc.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hi"], dtype=object))
    sampling = gc.InferInput("sampling_parameters", [1], "BYTES")
    sampling.set_data_from_numpy(np.array([DEEP.encode()], dtype=object))
    code, message = _code_and_message(lambda: gc.InferenceServerClient(target).infer("lfm2", [text, sampling]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "nested too deeply" in message, message
    # and the server goes on
    ok = gc.InferenceServerClient(target).infer("lfm2", [text], parameters={"max_tokens": 2})
    assert json.dumps(ok.as_numpy("text_output")[0].decode())
