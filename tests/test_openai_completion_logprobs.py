"""Completions' `top_logprobs` as OpenAI's spec has them: the `logprobs` most likely tokens and
always the chosen one, so up to logprobs + 1 per token (vLLM's too). `logprobs: 0` gave
`top_logprobs: null`, and a sampled token outside the top ones was missing from its own
alternatives. Through the official client against the fake models (tests/openai_fake_server.py),
and on the real lfm2-demo model, where a hot sample often leaves the top one."""
import pytest

pytest.importorskip("openai")

import openai_fake_server  # noqa: E402
from inprocess_app import real_lm_client  # noqa: E402

server, client = openai_fake_server.server, openai_fake_server.client   # this module's server


def test_logprobs_0_gives_each_tokens_own(client):
    """FakeLM's pick has logprob -0.5: each token's alternatives are that token alone."""
    args = dict(model="lfm2", prompt="abc", max_tokens=3, temperature=0, logprobs=0)
    lp = client.completions.create(**args).choices[0].logprobs
    assert lp.token_logprobs == [-0.5] * 3 and lp.top_logprobs == [{"d": -0.5}, {"e": -0.5}, {"f": -0.5}]
    chunks = [c.choices[0].logprobs for c in client.completions.create(**args, stream=True)
              if c.choices and c.choices[0].logprobs]
    assert sum((c.top_logprobs for c in chunks), []) == lp.top_logprobs


@pytest.fixture(scope="module")
def lm_client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=16) as client:
        yield client


def test_a_sampled_token_is_among_its_own_alternatives(lm_client):
    body = {"prompt": "hello", "max_tokens": 12, "temperature": 2.0, "seed": 5, "logprobs": 1, "ignore_eos": True}
    lp = lm_client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert top[token] == logprob and 1 <= len(top) <= 2
        assert max(top.values()) >= logprob
    assert any(len(top) == 2 for top in lp["top_logprobs"]), "the seed must sample below the top token"
    # an echoed prompt's tokens (scored, not sampled) likewise, its first without any
    echo = lm_client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 0, "echo": True,
                                                   "logprobs": 0}).json()["choices"][0]["logprobs"]
    assert echo["top_logprobs"][0] is None
    assert echo["top_logprobs"][1:] == [{t: lp} for t, lp in zip(echo["tokens"][1:], echo["token_logprobs"][1:])]
