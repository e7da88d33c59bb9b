"""Token names in the OpenAI routes' logprobs: a special token (eos, bos, pad, ...) has no
text, and every one was named "", so completions' top_logprobs (a dict keyed by name) kept one
of two specials among a token's alternatives, and chat could not tell them apart. They are
named as their tokenizer names them (`<|im_end|>`), as vLLM names them; any two alternatives
that still share a name are both kept. On lfm2-demo's byte tokenizer, a tokenizer.json and the
real lfm2-demo model behind the routes."""
from types import SimpleNamespace

import pytest

from inprocess_app import real_lm_client
from models.lfm2.presets import PRESETS
from models.lfm2.tokenizer import ByteTokenizer, HFTokenizer
from service.openai_common import token_name
from service.routes_openai_completions import _alternatives
from service.testing import FakeTokenizer
from test_chat import SPECIALS, _config, _tokenizer_dir


def test_byte_tokenizer_names_its_special_ids_apart():
    tok = ByteTokenizer(PRESETS["lfm2-demo"])          # pad 256, bos 257, eos 258; 259..263 unused
    names = [token_name(tok, i) for i in range(256, 264)]
    assert [n for n, _ in names[:3]] == ["<|pad|>", "<|startoftext|>", "<|im_end|>"]
    assert len({n for n, _ in names}) == 8 and all(raw == b"" for _, raw in names)   # no text, no bytes
    assert token_name(tok, 65) == ("A", b"A")


def test_tokenizer_json_specials_by_their_vocabulary_names(tmp_path):
    tok = HFTokenizer(_tokenizer_dir(tmp_path) / "tokenizer.json", _config())
    assert [token_name(tok, i)[0] for i in range(len(SPECIALS))] == SPECIALS
    assert token_name(tok, tok.encode("fox", add_special_tokens=False)[0])[0] != ""


def test_a_tokenizer_without_names_spells_them_by_id():
    assert token_name(FakeTokenizer(96), 95) == ("token_id:95", b"")   # the fake's eos


def test_alternatives_of_one_name_are_all_kept():
    """A tokenizer may decode two tokens alike (a sentencepiece `▁the` and `the` alone)."""
    alike = SimpleNamespace(decode=lambda ids: "the" if ids[0] in (5, 6) else "x")
    got = _alternatives(alike, [{"token_id": 5, "logprob": -0.1}, {"token_id": 6, "logprob": -0.2},
                                {"token_id": 7, "logprob": -0.3}])
    assert got == {"the": -0.1, "token_id:6": -0.2, "x": -0.3}


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=8) as client:
        yield client


def test_completions_top_logprobs_keep_every_special_alternative(client):
    """Echo scoring of a prompt whose alternatives hold several specials at once: every one of
    the top 20 is a key of its own, a special under its name (pad/bos/eos/unused ids collapsed
    into one "" key before)."""
    import torch
    lm = client.app.state.service.runtimes["lfm2"].served.lm
    prompt = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.inference_mode():
        top = torch.log_softmax(lm(torch.tensor([prompt])).float(), -1)[0, :-1].topk(20, dim=-1).indices.tolist()
    assert max(sum(i >= 256 for i in ids) for ids in top) >= 2, "the prompt must put two specials among them"
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 20})
    got = r.json()["choices"][0]["logprobs"]["top_logprobs"][1:]
    for ids, d in zip(top, got, strict=True):
        assert {token_name(lm.tokenizer, i)[0] for i in ids} <= set(d) and len(d) >= 20, (ids, d)
    assert any("<|im_end|>" in d or "<|pad|>" in d for d in got)
