"""What Triton's tools read before they load a text model (perf_analyzer, genai-perf): over gRPC
the generate model's metadata and config list its text interface beside input_ids, every input
optional (service/triton_ext.py); a request may ask for both interfaces' outputs and gets its
own; and every generation, whatever its route, counts in the model's Triton statistics
(service/statistics.py), queue count included (perf_analyzer finds the model's version by it).
Fake models, uvicorn + gRPC in this process."""
import time

import httpx
import numpy as np
import pytest

gc = pytest.importorskip("tritonclient.grpc")

from tests import grpc_fake_server  # noqa: E402
from tests.grpc_fake_server import _code_and_message  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402

served = grpc_fake_server.served

# What a Triton vLLM-backend model lists (text_input, stream, sampling_parameters,
# exclude_input_in_output) and TRT-LLM's max_tokens: the names genai-perf sends.
TEXT = [("text_input", "BYTES"), ("stream", "BOOL"), ("sampling_parameters", "BYTES"),
        ("exclude_input_in_output", "BOOL"), ("max_tokens", "INT32")]


def _text(name, value):
    tensor = gc.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value.encode()]], dtype=object))
    return tensor


def _ids(values):
    tensor = gc.InferInput("input_ids", [1, len(values)], "INT64")
    tensor.set_data_from_numpy(np.array([values], dtype=np.int64))
    return tensor


def _stats(client, model="lfm2"):
    (stats,) = client.get_inference_statistics(model, as_json=True)["model_stats"]
    inf = stats["inference_stats"]
    count = {k: int(inf[k].get("count", 0)) for k in inf}
    return count, {k: int(stats.get(k, 0)) for k in ("inference_count", "execution_count", "last_inference")}, inf


def test_grpc_lists_the_text_interface_rest_does_not(served):
    target, url, _ = served
    client = gc.InferenceServerClient(target)
    meta = client.get_model_metadata("lfm2", as_json=True)
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("input_ids", "INT64"), *TEXT]
    assert [[int(d) for d in t["shape"]] for t in meta["inputs"][1:]] == [[-1, 1]] * len(TEXT)
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("logits", "FP32"), ("text_output", "BYTES")]
    config = client.get_model_config("lfm2", as_json=True)["config"]
    assert [(t["name"], t["data_type"], t.get("optional")) for t in config["input"]] == \
           [("input_ids", "TYPE_INT64", True)] + [(n, "TYPE_STRING" if d == "BYTES" else f"TYPE_{d}", True)
                                                   for n, d in TEXT]
    assert config["output"][-1] == {"name": "text_output", "data_type": "TYPE_STRING", "dims": ["1"]}
    # REST's describe /infer only (its text generation is /generate); MobileNetV2 is tensors only
    assert [t["name"] for t in httpx.get(f"{url}/v2/models/lfm2").json()["inputs"]] == ["input_ids"]
    assert all("optional" not in t for t in httpx.get(f"{url}/v2/models/lfm2/config").json()["input"])
    assert [t["name"] for t in client.get_model_metadata("mobilenet_v2", as_json=True)["inputs"]] == ["input"]
    assert all("optional" not in t for t in client.get_model_config("mobilenet_v2", as_json=True)["config"]["input"])


def test_each_request_gets_its_own_interfaces_outputs(served):
    """perf_analyzer asks for every output the metadata lists: a tensor request gets logits, a
    generation text_output. Asking only for the other interface's output is refused."""
    target, _, _ = served
    client = gc.InferenceServerClient(target)
    both = [gc.InferRequestedOutput("logits"), gc.InferRequestedOutput("text_output")]
    tensors = client.infer("lfm2", [_ids([1, 2, 3])], outputs=both)
    assert [o.name for o in tensors.get_response().outputs] == ["logits"]
    assert tensors.as_numpy("logits").shape[0] == 1
    text = client.infer("lfm2", [_text("text_input", "a"), _text("sampling_parameters", '{"max_tokens": 3}')],
                        outputs=list(reversed(both)))
    assert [o.name for o in text.get_response().outputs] == ["text_output"]
    assert text.as_numpy("text_output")[0] == b"bcd"
    code, message = _code_and_message(lambda: client.infer(
        "lfm2", [_ids([1, 2])], outputs=[gc.InferRequestedOutput("text_output")]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "send text_input" in message
    for outputs in (["logits"], ["nope", "text_output"]):
        code, message = _code_and_message(lambda: client.infer(
            "lfm2", [_text("text_input", "a")], outputs=[gc.InferRequestedOutput(n) for n in outputs]))
        assert code == "StatusCode.INVALID_ARGUMENT" and "only output is 'text_output'" in message, message


def test_every_generation_route_counts_in_the_statistics(served):
    """gRPC text_input, Triton's REST generate, /v1/generate and /v1/completions (n=2: two
    sequences): each a success with its queue and compute (the three compute counts equal),
    an inference; the decode steps executions."""
    target, url, _ = served
    client = gc.InferenceServerClient(target)
    before, totals, _ = _stats(client)
    client.infer("lfm2", [_text("text_input", "a"), _text("sampling_parameters", '{"max_tokens": 4}')])
    for path, body in (("/v2/models/lfm2/generate", {"text_input": "a", "parameters": {"max_tokens": 4}}),
                       ("/v1/generate", {"prompt": "a", "max_new_tokens": 4}),
                       ("/v1/completions", {"model": "lfm2", "prompt": "a", "max_tokens": 4, "n": 2})):
        assert httpx.post(url + path, json=body, timeout=30).status_code == 200
    after, totals_after, inf = _stats(client)
    grew = {k: after[k] - before[k] for k in after}
    assert grew["success"] == grew["queue"] == 5 and grew["fail"] == 0
    assert grew["compute_input"] == grew["compute_infer"] == grew["compute_output"] == 5
    assert totals_after["inference_count"] - totals["inference_count"] == 5
    assert totals_after["execution_count"] - totals["execution_count"] >= 4   # 4 tokens: at least 4 steps
    assert totals_after["last_inference"] >= int(time.time() * 1000) - 60_000
    assert int(inf["success"]["ns"]) >= int(inf["compute_infer"]["ns"]) > 0


def test_a_generation_the_client_leaves_is_a_fail():
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    app = create_app(Settings(grpc_port=0, max_new_tokens=300, max_sequence_length=512),
                     models=fake_models(token_delay_s=0.02), hooks=fake_hooks())
    with in_process_server(app) as url:
        client = gc.InferenceServerClient(f"127.0.0.1:{app.state.service.grpc_port}")
        before, _, _ = _stats(client)
        with httpx.stream("POST", f"{url}/v1/generate", json={"prompt": "a", "max_new_tokens": 300, "stream": True},
                          timeout=30) as r:
            next(r.iter_lines())   # under way; then the client leaves
        deadline = time.time() + 5
        while _stats(client)[0]["fail"] == before["fail"] and time.time() < deadline:
            time.sleep(0.05)
        after, _, _ = _stats(client)
        assert after["fail"] - before["fail"] == 1 and after["success"] == before["success"]
        assert after["queue"] == before["queue"]   # a fail's queue and compute are not counted (as Triton)
