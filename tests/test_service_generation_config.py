"""--generation-config (vLLM's): with `auto` (the default) a sampling field a request leaves
out takes the served checkpoint's generation_config.json value (a tiny transformers checkpoint
through /v1/generate, greedy tokens compared with LFM2ForCausalLM.generate given the same
values; the fake LM through every generate route); with `none`, the routes' own defaults; what
the client set always wins; Triton's generate extension passes on which parameters were set."""
import json

import pytest
from fastapi.testclient import TestClient

transformers = pytest.importorskip("transformers")

from models.lfm2 import LFM2ForCausalLM  # noqa: E402
from models.registry import build_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.routes_v2_generate import to_generate  # noqa: E402
from service.schemas import TritonGenerateRequest  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.testing import fake_hooks, fake_models  # noqa: E402
from server_process import client_ready  # noqa: E402
from test_lfm2 import make_hf  # noqa: E402

PROMPT = [1, 5, 9, 5, 9, 5, 9]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_served_gen_config")
    make_hf(path, seed=32)
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                                                             "repetition_penalty": 1.4}))
    return path


def _client(path, **settings):
    app = create_app(Settings(models=("lfm2",), warmup=False, max_sequence_length=64, max_new_tokens=16, **settings),
                     models={"lfm2": build_model("lfm2", str(path), device="cpu")})
    return TestClient(app)


def _tokens(http, **fields):
    r = http.post("/v1/generate", json={"input_ids": PROMPT, "max_new_tokens": 8, "ignore_eos": True, **fields})
    assert r.status_code == 200, r.text
    return r.json()["token_ids"]


def test_auto_takes_the_checkpoints_sampling_defaults(checkpoint):
    lm = LFM2ForCausalLM.from_pretrained(checkpoint)
    penalised = lm.generate([PROMPT], max_new_tokens=8, repetition_penalty=1.4, stop_token_ids=(), eos_token_id=None)[0]
    plain = lm.generate([PROMPT], max_new_tokens=8, repetition_penalty=1.0, stop_token_ids=(), eos_token_id=None)[0]
    assert penalised != plain
    with _client(checkpoint) as http:
        client_ready(http)
        assert _tokens(http) == penalised                                  # left out: the file's 1.4
        assert _tokens(http, repetition_penalty=1.0) == plain             # set: the client's
    with _client(checkpoint, generation_config="none") as http:
        client_ready(http)
        assert _tokens(http) == plain


@pytest.mark.parametrize("route, body, greedy_text", [
    pytest.param("/v1/completions", {"prompt": "abc", "max_tokens": 6}, lambda r: r["choices"][0]["text"],
                 id="completions"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "abc"}], "max_tokens": 6},
                 lambda r: r["choices"][0]["message"]["content"], id="chat"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "abc", "parameters": {"max_tokens": 6}},
                 lambda r: r["text_output"], id="triton-generate"),
    pytest.param("/v1/generate", {"prompt": "abc", "max_new_tokens": 6}, lambda r: r["text"], id="generate"),
])
@pytest.mark.parametrize("file_temperature", [pytest.param(0.0, id="file-greedy"), pytest.param(0.9, id="file-samples")])
def test_every_generate_route_fills_only_what_the_client_left_out(route, body, greedy_text, file_temperature):
    """The fake LM (service/testing.py) answers greedily with the characters after the prompt's
    last one and samples at random with a temperature > 0. A request without a temperature
    takes the checkpoint's (greedy at 0 where OpenAI's own default, 1.0, samples; sampling at
    0.9 where /v1/generate's own, 0, is greedy); one that sets a temperature gets it."""
    models = fake_models()
    models["lfm2"].lm.generation_defaults = {"temperature": file_temperature, "top_p": 0.95}
    app = create_app(Settings(warmup=False, max_new_tokens=16, max_sequence_length=64), models=models,
                     hooks=fake_hooks())
    with TestClient(app) as http:
        client_ready(http)
        replies = [http.post(route, json=_with(body, seed=3, **t)) for t in
                   ({"temperature": 0}, {}, {"temperature": 0.9 if file_temperature == 0 else 0})]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    greedy, left_out, set_by_client = (greedy_text(r.json()) for r in replies)
    assert len(greedy) == 6
    assert (left_out == greedy) == (file_temperature == 0)
    assert (set_by_client == greedy) == (file_temperature != 0)


def _with(body: dict, **fields) -> dict:
    if "parameters" in body:
        return {**body, "parameters": {**body["parameters"], **fields}}
    return {**body, **fields}


def test_triton_generate_passes_on_what_the_client_set():
    body = TritonGenerateRequest.model_validate({"text_input": "a", "max_tokens": 3,
                                                 "parameters": {"temperature": 0.5},
                                                 "sampling_parameters": json.dumps({"min_p": 0.1})})
    req, _, client_set = to_generate(body, stream=False)
    assert {"temperature", "min_p", "max_tokens"} == client_set and req.temperature == 0.5
    assert "repetition_penalty" not in client_set and "top_k" not in client_set


def test_bad_generation_config_value_is_refused_in_settings():
    with pytest.raises(ValueError, match="generation_config"):
        Settings(generation_config="vllm")


@pytest.mark.parametrize("route, body, text", [
    pytest.param("/v1/completions", {"prompt": "abc", "max_tokens": 6, "top_k": None}, lambda r: r["choices"][0]["text"],
                 id="completions-top_k"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "abc"}], "max_tokens": 6,
                                          "top_k": None}, lambda r: r["choices"][0]["message"]["content"], id="chat-top_k"),
    pytest.param("/v1/generate", {"prompt": "abc", "max_new_tokens": 6, "top_k": None, "top_p": None},
                 lambda r: r["text"], id="generate-top_k-top_p"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "abc", "max_tokens": 6, "top_k": None,
                                              "parameters": {"top_p": None}}, lambda r: r["text_output"],
                 id="triton-top-level-and-parameters"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "abc", "sampling_parameters":
                                              json.dumps({"max_tokens": 6, "top_k": None})},
                 lambda r: r["text_output"], id="triton-sampling_parameters"),
])
def test_a_null_field_takes_the_checkpoints_value(route, body, text):
    """A field sent as null is left out (vLLM's reading; OpenAI's schema makes them nullable and
    the openai client sends an explicit None as null): it takes the checkpoint's value. The real
    lfm2-demo with a file's top_k 1 samples its greedy tokens at temperature 1; null top_k (or
    top_p) counted as set, so it sampled from the whole vocabulary."""
    served = build_model("lfm2", None, device="cpu", seed=0)
    served.lm.generation_defaults = {"top_k": 1}
    app = create_app(Settings(models=("lfm2",), warmup=False, max_sequence_length=64, max_new_tokens=16),
                     models={"lfm2": served})
    with TestClient(app) as http:
        client_ready(http, timeout=120)
        greedy, null = (http.post(route, json={**body, "ignore_eos": True, **extra}) for extra in
                        ({"temperature": 0}, {"temperature": 1.0, "seed": 5}))
    assert greedy.status_code == null.status_code == 200, (greedy.text, null.text)
    assert text(greedy.json()) and text(null.json()) == text(greedy.json())
