"""The OpenAI routes on a checkpoint without tokenizer.json (token ids in, no text out): a
completion of token ids is served; logprobs, which name tokens, are a 400 saying so for every
value that asks for them (0 asked and got a 500: `0 in (None, False)` read it as not asked)."""
import pytest
from fastapi.testclient import TestClient

transformers = pytest.importorskip("transformers")

from models.registry import build_model  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from error_bodies import error_message  # noqa: E402
from server_process import client_ready  # noqa: E402
from test_lfm2 import make_hf  # noqa: E402


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_no_tokenizer")
    make_hf(path, seed=33)
    app = create_app(Settings(models=("lfm2",), warmup=False, max_sequence_length=64, max_new_tokens=8),
                     models={"lfm2": build_model("lfm2", str(path), device="cpu")})
    with TestClient(app) as client:
        yield client_ready(client)


def test_token_id_completion_is_served(http):
    r = http.post("/v1/completions", json={"prompt": [1, 5, 9], "max_tokens": 4, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, r.text


@pytest.mark.parametrize("logprobs", [pytest.param(0, id="0"), pytest.param(3, id="3")])
def test_completion_logprobs_without_a_tokenizer_is_a_400(http, logprobs):
    r = http.post("/v1/completions", json={"prompt": [1, 5, 9], "max_tokens": 2, "logprobs": logprobs})
    assert r.status_code == 400 and "logprobs" in error_message(r) and "no tokenizer" in error_message(r), r.text


def test_a_structured_output_without_a_tokenizer_is_a_400(http):
    """A grammar holds text: without a tokenizer there is none to hold (not a 500)."""
    r = http.post("/v1/completions", json={"prompt": [1, 5, 9], "max_tokens": 2, "guided_regex": "[a-z]+"})
    assert r.status_code == 400 and "has no tokenizer" in error_message(r), r.text
    r = http.post("/v1/generate", json={"input_ids": [1, 5, 9], "structured_outputs": {"choice": ["a"]}})
    assert r.status_code == 400 and "structured outputs" in error_message(r), r.text
