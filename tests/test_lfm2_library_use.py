"""LFM2ForCausalLM.generate called as transformers' generate is: a left-padded (B, L) batch with
its attention_mask, do_sample, eos_token_id. Compared with transformers' Lfm2ForCausalLM
(the independent reference) on the same random weights."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.lfm2 import LFM2ForCausalLM  # noqa: E402

from hf_reference import random_checkpoint  # noqa: E402
from test_lfm2 import TINY, left_pad, rand_ids  # noqa: E402

PAD = 57          # a real token id as padding: only the mask says it is padding


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_library_use")
    hf = random_checkpoint(transformers, "Lfm2", TINY, path, seed=5)
    return hf, LFM2ForCausalLM.from_pretrained(path)


@pytest.fixture(scope="module")
def batch():
    rows = [rand_ids(1, n, seed=30 + n)[0].tolist() for n in (2, 8, 5)]
    ids, mask = left_pad(rows, pad=PAD)
    return rows, ids, mask


def hf_new_tokens(hf, ids, mask, **kw):
    """transformers' new tokens per row, cut after its first eos (it pads the rest)."""
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, pad_token_id=0, **kw)[:, ids.shape[1]:].tolist()
    eos = kw.get("eos_token_id")
    stops = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
    cut = []
    for row in out:
        n = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        cut.append(row[:n])
    return cut


def test_left_padded_batch_with_attention_mask_matches_transformers(pair, batch):
    """generate had no attention_mask: a padded (B, L) tensor was read as prompts whose
    padding ids were real tokens (TypeError when the mask was passed)."""
    hf, ours = pair
    rows, ids, mask = batch
    want = hf_new_tokens(hf, ids, mask, max_new_tokens=7, do_sample=False, eos_token_id=None)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    assert got == want
    assert got == ours.generate(rows, max_new_tokens=7)        # the mask strips the padding
    streamed = list(ours.stream_generate(ids, attention_mask=mask.tolist(), max_new_tokens=7))
    assert [[s[i] for s in streamed] for i in range(3)] == want


def test_input_ids_keyword_as_transformers_calls_it(pair, batch):
    """`model.generate(**tokenizer(texts, return_tensors="pt", padding=True))`, the common
    transformers call, was a TypeError: the prompts had no input_ids name."""
    hf, ours = pair
    _, ids, mask = batch
    encoded = {"input_ids": ids, "attention_mask": mask}
    want = hf_new_tokens(hf, ids, mask, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert ours.generate(**encoded, max_new_tokens=5) == want
    streamed = list(ours.stream_generate(**encoded, max_new_tokens=5))
    assert [[s[i] for s in streamed] for i in range(3)] == want
    for bad in ({"prompts": ids, "input_ids": ids}, {}):
        with pytest.raises(ValueError, match="input_ids"):
            ours.generate(**bad, max_new_tokens=1)


@pytest.mark.parametrize("eos", [pytest.param("first", id="int"), pytest.param("list", id="list")])
def test_eos_token_id_stops_each_row_like_transformers(pair, batch, eos):
    hf, ours = pair
    _, ids, mask = batch
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=7)
    stop = greedy[1][2] if eos == "first" else [greedy[1][2], greedy[2][4]]
    want = hf_new_tokens(hf, ids, mask, max_new_tokens=7, do_sample=False, eos_token_id=stop)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=7, eos_token_id=stop)
    assert got == want and got != greedy
    merged = ours.generate(ids, attention_mask=mask, max_new_tokens=7, eos_token_id=None, stop_token_ids=[])
    assert merged == greedy


def test_do_sample(pair, batch):
    """do_sample=False is greedy whatever the temperature (transformers ignores it); do_sample=True
    samples with transformers' defaults for what is not given: temperature 1.0, top_k 50."""
    _, ours = pair
    rows, _, _ = batch
    greedy = ours.generate(rows, max_new_tokens=6)
    assert ours.generate(rows, max_new_tokens=6, do_sample=False, temperature=0.8, top_k=3) == greedy
    sampled = ours.generate(rows, max_new_tokens=6, do_sample=True, seed=4)
    assert sampled == ours.generate(rows, max_new_tokens=6, temperature=1.0, top_k=50, seed=4)
    assert sampled == ours.generate(rows, max_new_tokens=6, do_sample=True, temperature=1.0, seed=4)
    assert sampled != ours.generate(rows, max_new_tokens=6, temperature=1.0, seed=4)   # the whole vocabulary
    assert ours.generate(rows, max_new_tokens=6, do_sample=True, temperature=0.5, top_k=7, seed=4) == \
        ours.generate(rows, max_new_tokens=6, temperature=0.5, top_k=7, seed=4)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda m, ids, mask: m.generate(ids, attention_mask=mask.flip(1)), "left padding",
                 id="right-padding"),
    pytest.param(lambda m, ids, mask: m.generate(ids, attention_mask=mask[:, 1:]), "shape", id="mask-shape"),
    pytest.param(lambda m, ids, mask: m.generate(ids, attention_mask=mask * 2), "0 .*1", id="mask-values"),
    pytest.param(lambda m, ids, mask: m.generate(ids, attention_mask=torch.zeros_like(mask)), "row 0",
                 id="all-padding-row"),
    pytest.param(lambda m, ids, mask: m.generate(ids, do_sample=True, temperature=0.0), "temperature",
                 id="sample-at-zero"),
    pytest.param(lambda m, ids, mask: m.generate(ids, eos_token_id=[2, 500]), "eos_token_id", id="bad-eos"),
    pytest.param(lambda m, ids, mask: m.generate(ids, do_sample="yes"), "do_sample", id="do-sample-str"),
])
def test_bad_transformers_style_arguments_say_what_was_expected(pair, batch, call, match):
    _, ours = pair
    _, ids, mask = batch
    with pytest.raises(ValueError, match=match):
        call(ours, ids, mask)


@pytest.mark.parametrize("kwargs, match", [
    pytest.param(dict(temperature=[0.7]), "temperature", id="temperature-list"),
    pytest.param(dict(do_sample=True, top_p=[0.9]), "top_p", id="top-p-list"),
    pytest.param(dict(do_sample=True, top_p="most"), "top_p", id="top-p-word"),
    pytest.param(dict(stop_token_ids=2), r"stop_token_ids .*\[2\]", id="stop-ids-int"),
    pytest.param(dict(do_sample=True, seed="a"), "seed", id="seed-str"),
    pytest.param(dict(do_sample=True, seed=1.5), "seed", id="seed-float"),
    pytest.param(dict(do_sample=True, seed=2 ** 64), "seed", id="seed-too-large"),
])
def test_a_wrong_typed_argument_is_a_value_error_naming_it(pair, batch, kwargs, match):
    """These were a TypeError (float() of a list, `*` of an int), a ValueError naming neither the
    argument nor its range ('could not convert string to float', 'Overflow when unpacking long
    long'), or silently truncated (seed 1.5 ran as 1); a bad seed reached stream_generate's
    first next(), not the call."""
    _, ours = pair
    rows, _, _ = batch
    with pytest.raises(ValueError, match=match):
        ours.generate(rows, max_new_tokens=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        ours.stream_generate(rows, max_new_tokens=2, **kwargs)      # at the call, before any step


def test_padding_after_cached_tokens_is_refused_not_computed_wrong(pair, batch):
    """forward(ids, attention_mask, cache) took a 0 column after the row's cached tokens: the
    zero entered the conv window, and the logits silently differed from the tokens alone (by
    ~5 on this model). Padding before a row's first token, chunk after chunk, stays fine."""
    _, ours = pair
    rows, ids, mask = batch
    with torch.inference_mode():
        cache = ours.new_cache(1, 16)
        ours(torch.tensor([rows[1]]), cache=cache)
        with pytest.raises(ValueError, match="left padding of the whole sequence"):
            ours(torch.tensor([[5, 7]]), attention_mask=torch.tensor([[0, 1]]), cache=cache)
        whole = ours(ids, attention_mask=mask)
        cache = ours.new_cache(3, ids.shape[1])
        chunks = [ours(ids[:, c], attention_mask=mask[:, c], cache=cache)        # row 0: all padding, then mixed
                  for c in (slice(0, 2), slice(2, 5), slice(5, None))]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(chunks, 1)[real], whole[real], rtol=1e-4, atol=1e-4)
