"""Prompt scoring (models/lfm2/scoring.py) against log_softmax of one plain forward, with the
logits made a few rows at a time."""
import pytest
import torch

from models.lfm2.scoring import prompt_logprobs

from test_decoding import tiny_model


def test_prompt_logprobs_in_chunks_equal_one_plain_forward():
    model = tiny_model(seed=7)
    ids = torch.randint(0, 97, (23,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.inference_mode():
        lp = torch.log_softmax(model(torch.tensor([ids])).float(), -1)[0]     # (L, V)
    got = prompt_logprobs(model, ids, top=3, chunk=5)                          # 22 rows in 5 chunks
    whole = prompt_logprobs(model, ids, top=3)                                 # one chunk
    assert len(got) == len(whole) == len(ids) - 1
    assert [a for a, _ in got] == pytest.approx([a for a, _ in whole], abs=1e-5)
    for t, (logprob, top) in enumerate(got):
        assert abs(logprob - lp[t, ids[t + 1]].item()) < 1e-5
        v, i = lp[t].topk(3)
        assert [a for a, _ in top] == i.tolist()
    assert prompt_logprobs(model, ids[:1]) == []                               # nothing before it


@pytest.mark.parametrize("batch_tokens", [pytest.param(4096, id="one-forward"), pytest.param(40, id="groups-of-40")])
def test_prompts_scored_together_equal_each_alone(batch_tokens):
    """Ragged prompts left-padded into shared forwards (longest first, grouped by padded
    tokens): each prompt's entries equal log_softmax of its own plain forward, in its order."""
    from models.lfm2.scoring import prompts_logprobs
    model = tiny_model(seed=3)
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 97, (n,), generator=gen).tolist() for n in (5, 1, 23, 2, 9, 23, 14)]
    got = prompts_logprobs(model, prompts, top=2, chunk=4, batch_tokens=batch_tokens)
    assert len(got) == len(prompts)
    for ids, entries in zip(prompts, got):
        assert len(entries) == len(ids) - 1
        if len(ids) < 2:
            continue
        with torch.inference_mode():
            lp = torch.log_softmax(model(torch.tensor([ids])).float(), -1)[0]     # (L, V)
        for t, (logprob, top) in enumerate(entries):
            assert abs(logprob - lp[t, ids[t + 1]].item()) < 1e-4
            assert [a for a, _ in top] == lp[t].topk(2).indices.tolist()
