"""README: a request that sends `temperature`, `top_k`, `top_p`, `min_p` or
`repetition_penalty` as null gets the checkpoint's generation_config value, as one that leaves
it out does, "on every generate route". /v1/generate and Triton's generate took null only for
top_k and top_p: null temperature, min_p or repetition_penalty was a 422 (400 on Triton's)
"Input should be a valid number". Here, with the real lfm2-demo and a file that samples
(temperature 1.0), a null field's reply equals the one that sends the file's value, and is not
the route's own default (greedy)."""
import json

import pytest
from fastapi.testclient import TestClient

from models.registry import build_model
from service.app import create_app
from service.settings import Settings
from server_process import client_ready

FILE = {"temperature": 1.0, "repetition_penalty": 1.4, "min_p": 0.05}
NULLS = {k: None for k in FILE}


@pytest.fixture(scope="module")
def http():
    served = build_model("lfm2", None, device="cpu", seed=0)
    served.lm.generation_defaults = dict(FILE)
    app = create_app(Settings(models=("lfm2",), warmup=False, max_sequence_length=64, max_new_tokens=16),
                     models={"lfm2": served})
    with TestClient(app) as client:
        yield client_ready(client, timeout=120)


def _generate(http, fields):
    r = http.post("/v1/generate", json={"prompt": "abc", "max_new_tokens": 6, "ignore_eos": True, "seed": 5, **fields})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def _triton(http, where, fields):
    body = {"text_input": "abc", "max_tokens": 6, "ignore_eos": True, "seed": 5}
    if where == "top":
        body.update(fields)
    elif where == "parameters":
        body["parameters"] = fields
    else:
        body["sampling_parameters"] = json.dumps(fields)
    r = http.post("/v2/models/lfm2/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()["text_output"]


def test_generate_null_takes_the_files_value(http):
    sent = _generate(http, FILE)
    assert _generate(http, NULLS) == sent
    assert _generate(http, {}) == sent
    assert _generate(http, {"temperature": 0.0}) != sent      # the file's temperature, not the route's greedy


@pytest.mark.parametrize("where", ["top", "parameters", "sampling_parameters"])
def test_triton_generate_null_takes_the_files_value(http, where):
    assert _triton(http, where, NULLS) == _triton(http, where, FILE)


def test_triton_null_beside_a_value_elsewhere_is_no_conflict(http):
    """A null top-level field is not set: a value in `parameters` is then the only one."""
    body = {"text_input": "abc", "max_tokens": 6, "ignore_eos": True, "seed": 5, "temperature": None,
            "parameters": {"temperature": 0.0}}
    r = http.post("/v2/models/lfm2/generate", json=body)
    assert r.status_code == 200, r.text
