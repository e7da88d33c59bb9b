"""generate()'s steering arguments (models/lfm2/steering.py): transformers' prefix_allowed_tokens_fn
and logits_processor, checked against transformers' own generate on the same random weights;
vLLM's structured_outputs, checked by parsing what comes out and against a greedy loop masked by
Python's prefix test. Before, the library's generate() took none of them (a TypeError)."""
import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.lfm2 import LFM2ForCausalLM  # noqa: E402

from hf_reference import random_checkpoint  # noqa: E402
from test_lfm2 import TINY, left_pad, rand_ids  # noqa: E402

V = TINY["vocab_size"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_steering")
    hf = random_checkpoint(transformers, "Lfm2", TINY, path, seed=9)
    return hf, LFM2ForCausalLM.from_pretrained(path)


@pytest.fixture(scope="module")
def batch():
    rows = [rand_ids(1, n, seed=40 + n)[0].tolist() for n in (3, 9, 6)]
    ids, mask = left_pad(rows, pad=0)
    return rows, ids, mask


@pytest.fixture(scope="module")
def demo():
    from models.registry import build_model
    return build_model("lfm2", None, device="cpu", seed=0).lm


def next_after(last: int) -> list[int]:
    """Depends only on the last token, so padding (which transformers shows, we do not) is moot."""
    return sorted({(last * 7 + j * 13) % V for j in range(6)})


def ban_last_token(input_ids, scores):
    """A logits processor: no row repeats its last token."""
    return scores.scatter(1, input_ids[:, -1:], float("-inf"))


class FavourEven:
    """A stateful-looking LogitsProcessor class, as transformers' are."""
    def __call__(self, input_ids, scores):
        return scores + 3.0 * (torch.arange(scores.shape[-1]) % 2 == 0)


def hf_greedy(hf, ids, mask, **kw):
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, pad_token_id=0, max_new_tokens=8, do_sample=False,
                           eos_token_id=None, **kw)[:, ids.shape[1]:].tolist()


def test_prefix_allowed_tokens_fn_matches_transformers(pair, batch):
    hf, ours = pair
    rows, ids, mask = batch
    fn = lambda batch_id, sent: next_after(int(sent[-1]))   # noqa: E731
    want = hf_greedy(hf, ids, mask, prefix_allowed_tokens_fn=fn)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=8, prefix_allowed_tokens_fn=fn)
    assert got == want
    assert got != ours.generate(rows, max_new_tokens=8)                 # the mask changed something
    for row, out in zip(rows, got):
        seq = row + out
        assert all(seq[j + 1] in next_after(seq[j]) for j in range(len(row) - 1, len(seq) - 1))


def test_logits_processors_match_transformers(pair, batch):
    hf, ours = pair
    rows, ids, mask = batch
    procs = [FavourEven(), ban_last_token]
    want = hf_greedy(hf, ids, mask, logits_processor=transformers.LogitsProcessorList(procs))
    assert ours.generate(rows, max_new_tokens=8, logits_processor=procs) == want
    assert ours.generate(rows, max_new_tokens=8, logits_processor=transformers.LogitsProcessorList(procs)) == want
    streamed = list(ours.stream_generate(rows, max_new_tokens=8, logits_processor=procs))
    assert [[s[i] for s in streamed] for i in range(3)] == want


def test_the_callables_see_each_rows_tokens_so_far(pair, batch):
    """prefix_allowed_tokens_fn: row i's own prompt and generated tokens, no padding;
    logits_processor: every row left-padded with pad_token_id to one length."""
    _, ours = pair
    rows, _, _ = batch
    seen_fn, seen_proc = [], []

    def fn(batch_id, sent):
        seen_fn.append((batch_id, sent.tolist()))
        return list(range(V))

    def proc(input_ids, scores):
        seen_proc.append(input_ids.clone())
        return scores

    out = ours.generate(rows, max_new_tokens=4, prefix_allowed_tokens_fn=fn, logits_processor=proc)
    for step in range(4):
        for i in range(3):
            assert seen_fn[step * 3 + i] == (i, rows[i] + out[i][:step])
        want, _ = left_pad([r + o[:step] for r, o in zip(rows, out)], pad=0)
        assert torch.equal(seen_proc[step], want)


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                            "n": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "n"], "additionalProperties": False}


def _valid(text: str) -> bool:
    value = json.loads(text)
    return (set(value) == {"name", "n"} and isinstance(value["name"], str) and len(value["name"]) <= 6
            and isinstance(value["n"], int) and 0 <= value["n"] <= 99)


@pytest.mark.parametrize("kind, value, check", [
    pytest.param("json", SCHEMA, _valid, id="json-schema"),
    pytest.param("regex", r"[0-9]{2}-[a-z]{1,3}", lambda t: re.fullmatch(r"[0-9]{2}-[a-z]{1,3}", t), id="regex"),
    pytest.param("choice", ["left", "right", "up"], lambda t: t in ("left", "right", "up"), id="choice"),
    pytest.param("grammar", 'root ::= "(" root ")" | "x"', lambda t: re.fullmatch(r"(\(*)x(\)*)", t)
                 and t.count("(") == t.count(")"), id="gbnf"),
])
def test_structured_outputs_rows_end_complete_and_in_the_language(demo, kind, value, check):
    """Sampled rows of one batch (temperature 1.5: the model alone writes anything) each end as
    soon as the text is complete, before max_new_tokens, and in the language."""
    tok = demo.tokenizer
    prompts = [tok.encode(p) for p in ("hi", "give json", "{", "x")]
    out = demo.generate(prompts, max_new_tokens=100, temperature=1.5, seed=11, structured_outputs={kind: value})
    for tokens in out:
        text = tok.decode(tokens)
        assert len(tokens) < 100 and check(text), (kind, text)
    again = demo.generate(prompts, max_new_tokens=100, temperature=1.5, seed=11, structured_outputs={kind: value})
    assert again == out                                          # each row copies the grammar afresh


def test_greedy_choice_equals_a_loop_masked_by_prefix(demo):
    """Greedy is the argmax among the bytes that keep the text a prefix of some choice (the eos
    once it equals one and another choice is longer), each step a full forward."""
    tok = demo.tokenizer
    choices = [b"ant", b"antelope", b"bee"]
    prompt = tok.encode("animal:")
    got = demo.generate([prompt], max_new_tokens=20, structured_outputs={"choice": [c.decode() for c in choices]})[0]
    out: list[int] = []
    while True:
        done = bytes(out)
        allowed = [b for b in range(256) if any(c.startswith(done + bytes([b])) for c in choices)]
        if done in choices:
            if not allowed:
                break                                              # complete: nothing may follow
            allowed.append(tok.eos_token_id)
        with torch.inference_mode():
            logits = demo(torch.tensor([prompt + out])).float()[0, -1]
        out.append(max(allowed, key=lambda j: logits[j].item()))
        if out[-1] == tok.eos_token_id:
            break
    assert got == out


def test_streamed_structured_rows_report_none_once_complete(demo):
    tok = demo.tokenizer
    steps = list(demo.stream_generate([tok.encode("a"), tok.encode("b")], max_new_tokens=30,
                                      structured_outputs={"choice": ["ok", "fine thanks"]}))
    texts = [tok.decode([s[i] for s in steps if s[i] is not None]) for i in range(2)]
    assert all(t in ("ok", "fine thanks") for t in texts), texts
    for i in range(2):
        column = [s[i] for s in steps]
        n = sum(t is not None for t in column)
        assert column[n:] == [None] * (len(column) - n)


@pytest.mark.parametrize("kwargs, needle", [
    pytest.param(dict(prefix_allowed_tokens_fn=lambda b, s: []), "non-empty list", id="fn-empty"),
    pytest.param(dict(prefix_allowed_tokens_fn=lambda b, s: [V]), r"\[0, 101\)", id="fn-out-of-range"),
    pytest.param(dict(prefix_allowed_tokens_fn=lambda b, s: "abc"), "token ids", id="fn-text"),
    pytest.param(dict(prefix_allowed_tokens_fn=[1, 2]), "must be a callable", id="fn-not-callable"),
    pytest.param(dict(logits_processor=[ban_last_token, 3]), "logits_processor must be", id="proc-not-callable"),
    pytest.param(dict(logits_processor=lambda ids, s: s[:, :5]), r"\(3, 101\)", id="proc-wrong-shape"),
    pytest.param(dict(structured_outputs={"json": {}}), "tokenizer", id="no-tokenizer"),
    pytest.param(dict(structured_outputs={"yaml": "x"}), "one key of json", id="unknown-kind"),
    pytest.param(dict(structured_outputs={"regex": "a", "choice": ["b"]}), "one key", id="two-kinds"),
])
def test_bad_steering_is_a_value_error_naming_it(pair, batch, kwargs, needle):
    _, ours = pair
    rows, _, _ = batch
    with pytest.raises(ValueError, match=needle):
        ours.generate(rows, max_new_tokens=3, **kwargs)


def test_a_processor_that_breaks_the_grammar_is_named(demo):
    tok = demo.tokenizer

    def force_z(input_ids, scores):
        return torch.where(torch.arange(scores.shape[-1]) == ord("z"), 100.0, 0.0).expand_as(scores).clone()

    with pytest.raises(ValueError, match="left its grammar"):
        demo.generate([tok.encode("a")], max_new_tokens=5, structured_outputs={"regex": "[0-9]+"},
                      logits_processor=force_z)
    with pytest.raises(ValueError, match="grammar: expected"):
        demo.generate([tok.encode("a")], max_new_tokens=5, structured_outputs={"grammar": " "})
