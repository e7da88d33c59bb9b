"""vLLM's allowed_token_ids and bad_words through the service (/v1/generate, Triton's generate),
on the seeded lfm2-demo model: greedy replies equal a loop of full forwards masked by the rule
written out (test_token_masks._greedy_loop); bad values are 400s naming the field. Triton's
bad_words was a 400 'unsupported'."""
import pytest

from error_bodies import error_message
from inprocess_app import real_lm_client
from test_token_masks import _greedy_loop


@pytest.fixture(scope="module")
def demo():
    from models.registry import build_model
    return build_model("lfm2", None, device="cpu", seed=0).lm


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=64) as client:
        yield client


def test_generate_allowed_token_ids(client, demo):
    allowed = sorted(b"aeiou xyz")
    r = client.post("/v1/generate", json={"prompt": "hello", "max_new_tokens": 12, "temperature": 0,
                                          "allowed_token_ids": allowed})
    assert r.status_code == 200, r.text
    assert r.json()["token_ids"] == _greedy_loop(demo, demo.tokenizer.encode("hello"), 12, allowed=set(allowed))
    assert set(r.json()["text"]) <= set("aeiou xyz")


def test_generate_bad_words_each_as_written(client, demo):
    """Two words taken from the unmasked reply (held to lower-case letters, so it is text), so
    the mask must bite; a byte tokenizer spells ' word' longer than 'word', so only the word as
    written is banned (vLLM's rule)."""
    tok = demo.tokenizer
    letters = sorted(b"abcdefghijklmnopqrstuvwxyz")
    body = {"prompt": "the", "max_new_tokens": 16, "temperature": 0, "allowed_token_ids": letters}
    free = client.post("/v1/generate", json=body).json()["text"]
    words = [free[2:4], free[7]]
    r = client.post("/v1/generate", json={**body, "bad_words": words})
    assert r.status_code == 200, r.text
    want = _greedy_loop(demo, tok.encode("the"), 16, allowed=set(letters), bad=[tuple(w.encode()) for w in words])
    assert r.json()["token_ids"] == want
    assert r.json()["text"] != free and all(w not in r.json()["text"] for w in words)


def test_triton_generate_takes_both_in_any_place(client, demo):
    allowed = sorted(b"0123456789")
    for body in ({"text_input": "n", "max_tokens": 6, "allowed_token_ids": allowed, "bad_words": ["7"]},
                 {"text_input": "n", "parameters": {"max_tokens": 6, "allowed_token_ids": allowed, "bad_words": "7"}}):
        r = client.post("/v2/models/lfm2/generate", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["text_output"].isdigit() and "7" not in r.json()["text_output"]


@pytest.mark.parametrize("body, needle", [
    pytest.param({"allowed_token_ids": []}, "allowed_token_ids", id="allowed-empty"),
    pytest.param({"allowed_token_ids": [1, 99999]}, "allowed_token_ids: token ids must be in [0, ", id="allowed-range"),
    pytest.param({"allowed_token_ids": [258], "min_tokens": 3}, "every allowed token is a stop token",
                 id="allowed-only-eos"),
    pytest.param({"bad_words": ["  "]}, "bad_words: expected non-blank words", id="bad-blank"),
    pytest.param({"bad_words": "cat"}, "bad_words", id="bad-not-a-list"),
])
def test_bad_masks_are_400s_naming_the_field(client, demo, body, needle):
    assert demo.tokenizer.eos_token_id == 258
    r = client.post("/v1/generate", json={"prompt": "x", "max_new_tokens": 4, **body})
    assert r.status_code in (400, 422) and needle in error_message(r), r.text
    assert client.get("/v2/health/ready").status_code == 200


def test_openai_routes_take_them_as_vllm_does(client, demo):
    """vLLM's extra fields on completions and chat (the openai client's extra_body)."""
    allowed = sorted(b"abc")
    r = client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 8, "temperature": 0,
                                             "allowed_token_ids": allowed, "bad_words": ["b"]})
    assert r.status_code == 200, r.text
    want = _greedy_loop(demo, demo.tokenizer.encode("hello"), 8, allowed=set(allowed), bad=[(ord("b"),)])
    assert r.json()["choices"][0]["text"] == bytes(want).decode()
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6,
                                                  "temperature": 1.0, "seed": 3, "allowed_token_ids": allowed})
    assert r.status_code == 200, r.text
    assert set(r.json()["choices"][0]["message"]["content"]) <= set("abc")
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 3, "allowed_token_ids": [10 ** 6]})
    assert r.status_code == 400 and "allowed_token_ids" in error_message(r)
