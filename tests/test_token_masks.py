"""vLLM's allowed_token_ids and bad_words on the continuous batch (models/lfm2/token_masks.py):
greedy tokens equal a loop of full forwards masked by the rule written out in Python; sampled
ones never leave the allowed set or complete a bad word; bad settings are ValueErrors naming them."""
import random

import pytest
import torch

from models.lfm2 import ContinuousBatch, Sequence
from models.lfm2.token_masks import bad_words_ids_for

from continuous_helpers import run_all


@pytest.fixture(scope="module")
def demo():
    from models.registry import build_model
    return build_model("lfm2", None, device="cpu", seed=0).lm


def _run(lm, seqs):
    return run_all(lm, seqs, max_length=128)


def _greedy_loop(lm, prompt, steps, allowed=None, bad=()):
    """The reference: each step a full forward, the argmax among the ids the rule leaves."""
    out: list[int] = []
    for _ in range(steps):
        with torch.inference_mode():
            logits = lm(torch.tensor([prompt + out])).float()[0, -1]
        banned = {w[-1] for w in bad if len(w) == 1 or tuple(out[-(len(w) - 1):]) == tuple(w[:-1])}
        ok = [j for j in (sorted(allowed) if allowed is not None else range(logits.numel())) if j not in banned]
        out.append(max(ok, key=lambda j: logits[j].item()))
    return out


def test_greedy_with_allowed_token_ids_equals_the_masked_loop(demo):
    rng = random.Random(1)
    prompts = [[rng.randrange(256) for _ in range(n)] for n in (3, 7)]
    allowed = frozenset(rng.sample(range(256), 12))
    seqs = _run(demo, [Sequence(p, max_new_tokens=10, allowed_token_ids=allowed) for p in prompts])
    for p, s in zip(prompts, seqs):
        assert s.tokens == _greedy_loop(demo, p, 10, allowed=allowed)
    assert seqs[0].tokens != _run(demo, [Sequence(prompts[0], max_new_tokens=10)])[0].tokens   # it changed them


def test_greedy_with_bad_words_equals_the_masked_loop(demo):
    """The bad words: the unmasked greedy output's first two-token pair and one of its tokens,
    so the mask must bite, on the generated tokens only."""
    prompt = list(b"the cat")
    free = _run(demo, [Sequence(prompt, max_new_tokens=12)])[0].tokens
    bad = ((free[2], free[3]), (free[0],))
    (s,) = _run(demo, [Sequence(prompt, max_new_tokens=12, bad_words_ids=bad)])
    assert s.tokens == _greedy_loop(demo, prompt, 12, bad=bad) and s.tokens != free
    assert free[0] not in s.tokens
    assert all((a, b) != bad[0] for a, b in zip(s.tokens, s.tokens[1:]))


def test_sampled_rows_stay_inside_the_masks(demo):
    allowed = frozenset(range(97, 123))              # a-z
    bad = ((ord("e"),), (ord("t"), ord("h")))
    seqs = _run(demo, [Sequence(list(b"x"), max_new_tokens=40, temperature=1.5, seed=s, allowed_token_ids=allowed,
                                bad_words_ids=bad) for s in range(4)])
    for s in seqs:
        text = bytes(s.tokens).decode()
        assert set(s.tokens) <= allowed and "e" not in text and "th" not in text, text


def test_a_grammar_wins_over_allowed_ids_it_leaves_nothing_of(demo):
    pytest.importorskip("llguidance")
    from models.lfm2.structured import TokenConstraint, grammar_for, guidance_tokenizer
    tok, vocab = demo.tokenizer, demo.config.vocab_size
    c = TokenConstraint(guidance_tokenizer(tok, vocab, (tok.eos_token_id,)), grammar_for("regex", "[0-9]{3}"), vocab)
    (s,) = _run(demo, [Sequence(list(b"n"), max_new_tokens=10, allowed_token_ids=frozenset(b"abc"), constraint=c,
                                stop_token_ids=(tok.eos_token_id,))])
    assert bytes(s.tokens).decode().isdigit() and len(s.tokens) == 3 and s.finish_reason == "stop"


@pytest.mark.parametrize("fields, needle", [
    pytest.param(dict(allowed_token_ids=frozenset()), "allowed_token_ids: expected 1 to", id="allowed-empty"),
    pytest.param(dict(allowed_token_ids=frozenset({5, 10 ** 6})), r"allowed_token_ids: token ids must be in \[0, ",
                 id="allowed-out-of-range"),
    pytest.param(dict(allowed_token_ids=frozenset({7}), stop_token_ids=(7,), min_tokens=2), "every allowed token is a stop",
                 id="allowed-only-held-stops"),
    pytest.param(dict(bad_words_ids=((),)), "bad_words: each word", id="bad-empty-word"),
    pytest.param(dict(bad_words_ids=((1, -2),)), "bad_words: each word", id="bad-negative-id"),
])
def test_bad_masks_are_value_errors_naming_them(demo, fields, needle):
    engine = ContinuousBatch(demo, capacity=1, max_length=64)
    with pytest.raises(ValueError, match=needle):
        engine.add(Sequence([1, 2, 3], max_new_tokens=4, **fields))


def test_bad_words_become_ids_as_vllm_tokenizes_them(tmp_path):
    """Each word as written, and after a space where that is another token of the same length
    (a BPE tokenizer's ' cat' vs 'cat'); a byte tokenizer's ' cat' is longer: not added."""
    from test_chat import _config, _tokenizer_dir
    from models.lfm2 import PRESETS
    from models.lfm2.tokenizer import ByteTokenizer, HFTokenizer
    tok = HFTokenizer(_tokenizer_dir(tmp_path) / "tokenizer.json", _config())
    enc = lambda t: tok.encode(t, add_special_tokens=False)   # noqa: E731
    word = next(w for w in ("the", "fox", "dog", "cat") if len(enc(w)) == len(enc(" " + w)) and enc(w) != enc(" " + w))
    assert bad_words_ids_for([word, "  " + word], enc) == (tuple(enc(word)), tuple(enc(" " + word)))
    byte = ByteTokenizer(PRESETS["lfm2-demo"])
    assert bad_words_ids_for(["cat"], lambda t: byte.encode(t, add_special_tokens=False)) == (tuple(b"cat"),)
    with pytest.raises(ValueError, match="non-blank"):
        bad_words_ids_for(["  "], enc)
