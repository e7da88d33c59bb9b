"""Structured outputs in the library (models/lfm2/structured.py, the continuous batch): what a
constrained sequence generates is checked by independent means (json.loads and the schema's
own rules, Python's re.fullmatch, the choice list, a hand-written check of the grammar's
language), on the seeded lfm2-demo model (byte tokens) and on a BPE tokenizer.json; greedy
decoding under a choice constraint equals a plain loop that masks by Python's prefix test."""
import json
import random
import re

import pytest
import torch

pytest.importorskip("llguidance")

from models.lfm2 import Sequence  # noqa: E402

from continuous_helpers import run_all  # noqa: E402
from models.lfm2.structured import TokenConstraint, grammar_for, guidance_tokenizer  # noqa: E402

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags"],
          "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "maximum": 999},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}}}


def _matches_schema(value) -> bool:
    return (isinstance(value, dict) and set(value) == {"name", "age", "tags"}
            and isinstance(value["name"], str) and len(value["name"]) <= 8
            and isinstance(value["age"], int) and not isinstance(value["age"], bool) and 0 <= value["age"] <= 999
            and isinstance(value["tags"], list) and len(value["tags"]) <= 3 and set(value["tags"]) <= {"a", "b"})


def _balanced(text: str) -> bool:   # the language of PARENS: "x" wrapped in matched parentheses
    depth = len(text) - len(text.lstrip("("))
    return text == "(" * depth + "x" + ")" * depth


PARENS = 'start: "(" start ")" | "x"'
PARENS_GBNF = 'root ::= "(" root ")" | "x"'


@pytest.fixture(scope="module")
def demo():
    from models.registry import build_model
    return build_model("lfm2", None, device="cpu", seed=0).lm


def _constraint(lm, kind, value):
    tok, vocab = lm.tokenizer, lm.config.vocab_size
    return TokenConstraint(guidance_tokenizer(tok, vocab, (tok.eos_token_id,)), grammar_for(kind, value), vocab)


def _run(lm, seqs):
    return run_all(lm, seqs, max_length=256)


@pytest.mark.parametrize("kind, value, check", [
    pytest.param("json", SCHEMA, lambda t: _matches_schema(json.loads(t)), id="json-schema"),
    pytest.param("regex", r"[0-9]{3}-[a-z]{2,4}", lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t), id="regex"),
    pytest.param("choice", ["yes", "no", "n/a \"q\""], lambda t: t in ("yes", "no", "n/a \"q\""), id="choice"),
    pytest.param("grammar", PARENS, _balanced, id="lark"),
    pytest.param("grammar", PARENS_GBNF, _balanced, id="gbnf"),
])
def test_sampled_sequences_stay_in_the_language(demo, kind, value, check):
    """Several sampled sequences of one batch (temperature 1.5: the model alone writes
    anything), each with its own constraint, end complete ("stop") and in the language."""
    tok = demo.tokenizer
    seqs = _run(demo, [Sequence(tok.encode(p), max_new_tokens=120, temperature=1.5, seed=seed,
                                stop_token_ids=(tok.eos_token_id,), constraint=_constraint(demo, kind, value))
                       for seed, p in enumerate(["hi", "name?", "{", "x"])])
    for s in seqs:
        text = tok.decode(s.tokens)
        assert s.finish_reason == "stop", (kind, text)
        assert check(text), (kind, text)


def test_any_json_object_is_one_as_far_as_it_goes(demo):
    """json_object bounds nothing, so a sampled one may run to max_new_tokens: what it wrote
    opens an object, and each that ended on its own parses as one."""
    tok = demo.tokenizer
    seqs = _run(demo, [Sequence(tok.encode("obj"), max_new_tokens=80, temperature=t, seed=seed,
                                stop_token_ids=(tok.eos_token_id,), constraint=_constraint(demo, "json_object", None))
                       for seed, t in enumerate([0.0, 0.3, 0.6, 1.0])])
    for s in seqs:
        text = tok.decode(s.tokens)
        assert text.startswith("{"), text
        if s.finish_reason == "stop":
            assert isinstance(json.loads(text), dict), text


def test_greedy_choice_equals_a_loop_masked_by_prefix(demo):
    """Greedy under a choice constraint is the argmax among the tokens that keep the bytes a
    prefix of some choice (eos once they equal one), each step a full forward: the mask is
    applied where it must be, not merely some valid text produced."""
    tok = demo.tokenizer
    choices = ["apple", "apricot", "banana split", "ap"]
    targets = [c.encode() for c in choices]
    for prompt in (tok.encode("fruit:"), tok.encode("z"), [rng_id for rng_id in random.Random(3).sample(range(256), 9)]):
        (seq,) = _run(demo, [Sequence(prompt, max_new_tokens=20, stop_token_ids=(tok.eos_token_id,),
                                      constraint=_constraint(demo, "choice", choices))])
        out: list[int] = []
        while True:
            done = bytes(out)
            allowed = [b for b in range(256) if any(t.startswith(done + bytes([b])) for t in targets)]
            if done in targets:
                allowed.append(tok.eos_token_id)
            if done in targets and len(allowed) == 1:
                break                                    # complete: nothing may follow
            with torch.inference_mode():
                logits = demo(torch.tensor([prompt + out])).float()[0, -1]
            out.append(max(allowed, key=lambda j: logits[j].item()))
            if out[-1] == tok.eos_token_id:
                break
        assert seq.tokens == out and seq.finish_reason == "stop"


def test_a_bpe_tokenizer_json_is_held_to_the_schema(tmp_path):
    """A tokenizer.json (byte-level BPE, multi-byte tokens): random logits, the argmax among the
    allowed tokens each step, decoded by the tokenizer itself, parse and match the schema."""
    from test_chat import _config, _tokenizer_dir
    from models.lfm2.tokenizer import HFTokenizer
    tok = HFTokenizer(_tokenizer_dir(tmp_path) / "tokenizer.json", _config())
    guidance = guidance_tokenizer(tok, 400, (2,))
    gen = torch.Generator().manual_seed(0)
    for kind, value, check in (("json", SCHEMA, lambda t: _matches_schema(json.loads(t))),
                               ("regex", r"(fox|dog)( [0-9]+)?", lambda t: re.fullmatch(r"(fox|dog)( [0-9]+)?", t))):
        for _ in range(5):
            c, ids = TokenConstraint(guidance, grammar_for(kind, value), 400), []
            while not c.complete and len(ids) < 200:
                allowed = c.allowed("cpu")
                token = int(torch.randn(400, generator=gen).masked_fill(~allowed, float("-inf")).argmax())
                if token == 2:
                    break                                 # eos: allowed only once the text is complete
                ids.append(token)
                c.advance(token)
            text = tok.decode(ids)
            assert check(text), text
            assert any(t > 259 for t in ids) or kind == "regex"   # merged BPE tokens were used, not bytes only


@pytest.mark.parametrize("kind, value, needle", [
    pytest.param("regex", "(", "unclosed group", id="bad-regex"),
    pytest.param("grammar", "start: missing", "missing", id="undefined-rule"),
    pytest.param("json", "{not json", "json: expected a JSON schema", id="schema-not-json"),
    pytest.param("json", [1, 2], "json: expected a JSON schema", id="schema-a-list"),
    pytest.param("choice", [], "choice: expected a list", id="no-choices"),
    pytest.param("grammar", "  ", "grammar: expected", id="empty-grammar"),
    pytest.param("xml", "x", "expected one of json", id="unknown-kind"),
])
def test_bad_constraints_are_value_errors_naming_them(demo, kind, value, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        _constraint(demo, kind, value)
