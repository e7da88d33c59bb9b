"""HTTP consistency across routes (fake models, in-process): query parameters a route does not
take, the impl label of a rejected request, OpenAI's `param` on semantic 400s, and TRT-LLM's
end_id / pad_id on Triton's generate extension."""
import io

import numpy as np
import pytest
from PIL import Image

from error_bodies import error_message
import inprocess_app
from test_metrics_series import requests_total


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


served = inprocess_app.served   # the module's client of the fake models


# -- 1. query parameters: dwserve's own routes refuse those they do not take ------------------

@pytest.mark.parametrize("query", [pytest.param("topk=3", id="misspelt"),
                                   pytest.param("top_k=2&impl=native", id="one-of-two")])
def test_classify_refuses_an_unknown_query_parameter(served, query):
    client, _ = served
    r = client.post(f"/v1/classify?{query}", files={"file": ("x.png", _png(), "image/png")})
    assert r.status_code == 400, r.text
    message = error_message(r)
    unknown = [kv.split("=")[0] for kv in query.split("&") if kv.split("=")[0] not in ("top_k", "depthwise_impl")]
    assert all(repr(name) in message for name in unknown) and "top_k" in message and "depthwise_impl" in message


def test_classify_still_takes_its_query_parameters(served):
    client, _ = served
    r = client.post("/v1/classify?top_k=2&depthwise_impl=native", files={"file": ("x.png", _png(), "image/png")})
    assert r.status_code == 200, r.text
    assert len(r.json()["labels"]) == 2


def test_v1_generate_refuses_query_parameters(served):
    client, _ = served
    r = client.post("/v1/generate?max_new_tokens=3", json={"prompt": "AB", "max_new_tokens": 2})
    assert r.status_code == 400, r.text
    assert "'max_new_tokens'" in error_message(r) and "JSON body" in error_message(r)


@pytest.mark.parametrize("path,body", [
    pytest.param("/v1/completions", {"prompt": "AB", "max_tokens": 2}, id="completions"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "AB"}], "max_tokens": 2},
                 id="chat"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "AB", "max_tokens": 2}, id="triton-generate"),
    pytest.param("/v2/models/lfm2/infer", {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64",
                                                       "data": [1, 2]}]}, id="oip-infer"),
])
def test_foreign_protocol_routes_ignore_query_parameters(served, path, body):
    """Azure's OpenAI client adds ?api-version=..., tritonclient passes query_params through:
    OpenAI, vLLM, KServe and Triton ignore what they do not read, and so do these routes."""
    client, _ = served
    assert client.post(f"{path}?api-version=2024-06-01", json=body).status_code == 200


# -- 2. a rejected request counts under the server default impl on every route --------------

def test_classify_bad_image_counts_under_the_server_default_impl(served):
    client, _ = served
    before = requests_total(client.get("/metrics").text)
    r = client.post("/v1/classify?depthwise_impl=per_group", files={"file": ("x.png", b"not an image", "image/png")})
    assert r.status_code == 400, r.text
    after = requests_total(client.get("/metrics").text)
    default = client.app.state.service.settings.depthwise_impl
    assert default != "per_group"
    key = ("mobilenet_v2", default, "400")
    assert after.get(key, 0) == before.get(key, 0) + 1
    assert after.get(("mobilenet_v2", "per_group", "400"), 0) == before.get(("mobilenet_v2", "per_group", "400"), 0)
    assert r.headers["x-depthwise-impl"] == default


# -- 3. OpenAI's `param` names the field a semantic 400 is about -----------------------------

@pytest.mark.parametrize("path,body,param", [
    pytest.param("/v1/completions", {"prompt": "AB", "n": 99}, "n", id="n"),
    pytest.param("/v1/completions", {"prompt": "AB", "logit_bias": {"99999": 1}}, "logit_bias", id="logit_bias-id"),
    pytest.param("/v1/completions", {"prompt": "AB", "logit_bias": {"5": 500}}, "logit_bias", id="logit_bias-value"),
    pytest.param("/v1/completions", {"prompt": "AB", "max_tokens": 17}, "max_tokens", id="max_tokens-limit"),
    pytest.param("/v1/completions", {"prompt": "A" * 60, "max_tokens": 10}, "max_tokens", id="max_tokens-room"),
    pytest.param("/v1/completions", {"prompt": ["AB"] * 65}, "prompt", id="too-many-prompts"),
    pytest.param("/v1/completions", {"prompt": "AB", "suffix": "x"}, "suffix", id="unsupported"),
    pytest.param("/v1/completions", {"prompt": "AB", "stop_token_ids": [99999]}, "stop_token_ids", id="stop-ids"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "AB"}], "n": 99}, "n",
                 id="chat-n"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "AB"}],
                                          "max_completion_tokens": 17}, "max_completion_tokens", id="chat-max"),
])
def test_openai_semantic_400_names_its_param(served, path, body, param):
    client, _ = served
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_openai_400_about_no_one_field_has_no_param(served):
    client, _ = served
    r = client.post("/v1/completions", json={"prompt": "AB", "suffix": "x", "best_of": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] is None, r.json()


# -- 4. TRT-LLM's end_id and pad_id on Triton's generate extension ---------------------------

@pytest.mark.parametrize("path", ["/v2/models/lfm2/generate", "/v2/models/lfm2/generate_stream"])
def test_end_id_ends_a_greedy_reply_where_it_is_produced(served, path):
    client, _ = served
    base = {"text_input": "AB", "max_tokens": 8, "bad_words": "", "stop_words": "", "ignore_eos": True}
    full = client.post("/v2/models/lfm2/generate", json=base).json()["text_output"]
    assert len(full) == 8
    k = 3   # the token the greedy reply produces at step k ends it there, itself not in the text
    end_id = ord(full[k]) - 32   # FakeTokenizer: id = ord(ch) - 32
    r = client.post(path, json={**base, "end_id": end_id, "pad_id": inprocess_app.EOS})
    assert r.status_code == 200, r.text
    if path.endswith("_stream"):
        import json
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        text, reason = "".join(e["text_output"] for e in events), events[-1]["finish_reason"]
    else:
        text, reason = r.json()["text_output"], r.json()["finish_reason"]
    assert (text, reason) == (full[:k], "stop")


def test_pad_id_alone_changes_nothing(served):
    client, _ = served
    base = {"text_input": "AB", "max_tokens": 5, "ignore_eos": True}
    want = client.post("/v2/models/lfm2/generate", json=base).json()["text_output"]
    r = client.post("/v2/models/lfm2/generate", json={**base, "parameters": {"pad_id": 2}})
    assert r.status_code == 200 and r.json()["text_output"] == want, r.text


@pytest.mark.parametrize("field", ["end_id", "pad_id"])
@pytest.mark.parametrize("value", [pytest.param(10**6, id="past-vocab"), pytest.param(-1, id="negative"),
                                   pytest.param(True, id="bool"), pytest.param(2.5, id="float")])
def test_end_id_and_pad_id_are_token_ids_of_the_vocabulary(served, field, value):
    client, _ = served
    r = client.post("/v2/models/lfm2/generate", json={"text_input": "AB", "max_tokens": 2, field: value})
    assert r.status_code == 400, r.text
    assert field in error_message(r)
