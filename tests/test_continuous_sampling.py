"""What a continuous batch (models/lfm2/continuous.py) does to each sequence's distribution:
logprobs and top-k alternatives under the model's raw distribution, equal to a plain forward
of prompt + tokens; presence/frequency penalties and logit_bias as OpenAI defines them,
against a reference written out (continuous_helpers.adjusted_greedy: a full forward per
token); bad values refused."""
import pytest
import torch

from models.lfm2.continuous import ContinuousBatch, Sequence

import continuous_helpers

model = continuous_helpers.model   # the tiny model, one per test module


def test_logprobs_are_the_models_distribution_and_checked(model):
    """Each generated token's logprob and top-k under the raw distribution (whatever the
    temperature), equal to a plain forward of prompt + tokens; a bad k is a ValueError."""
    engine = ContinuousBatch(model, capacity=2, max_length=40)
    a = engine.add(Sequence([3, 1, 4, 1, 5], max_new_tokens=6, temperature=0.9, seed=2, logprobs=4))
    b = engine.add(Sequence([9, 2], max_new_tokens=4, logprobs=0))
    c = engine.add(Sequence([7], max_new_tokens=3))
    while engine.busy:
        engine.step()
    for s, k in ((a, 4), (b, 0)):
        with torch.inference_mode():
            lp = torch.log_softmax(model(torch.tensor([s.prompt + s.tokens])).float(), -1)[0]
        assert len(s.token_logprobs) == len(s.tokens)
        for i, (tok, (got, top)) in enumerate(zip(s.tokens, s.token_logprobs)):
            want = lp[len(s.prompt) - 1 + i]
            assert abs(got - want[tok].item()) < 1e-5 and len(top) == k
            assert [t for t, _ in top] == want.topk(k).indices.tolist() if k else top == []
    assert c.token_logprobs == []
    for bad in (-1, 21, True, 2.0):
        with pytest.raises(ValueError, match="logprobs"):
            engine.add(Sequence([1], max_new_tokens=1, logprobs=bad))


def test_penalties_and_logit_bias_as_openai_defines_them(model):
    engine = ContinuousBatch(model, capacity=3, max_length=40)
    cases = [dict(presence=1.5), dict(frequency=2.0), dict(presence=-2.0, frequency=0.5),
             dict(bias={5: 100.0}), dict(frequency=1.0, bias={7: 3.0, 11: -100.0})]
    seqs = []
    for i, c in enumerate(cases):
        seqs.append(engine.add(Sequence([2 + i, 9, 4], max_new_tokens=8, presence_penalty=c.get("presence", 0.0),
                                        frequency_penalty=c.get("frequency", 0.0), logit_bias=c.get("bias"))))
    plain = engine.add(Sequence([2, 9, 4], max_new_tokens=8))
    while engine.busy:
        engine.step()
    for s, c in zip(seqs, cases):
        assert s.tokens == continuous_helpers.adjusted_greedy(
            model, s.prompt, 8, presence=c.get("presence", 0.0), frequency=c.get("frequency", 0.0),
            bias=c.get("bias")), c
    assert seqs[3].tokens == [5] * 8                      # +100: always that token
    assert 11 not in seqs[4].tokens
    assert seqs[0].tokens != plain.tokens or len(set(plain.tokens)) == 8   # the penalty changed something
    for bad, match in ((dict(presence_penalty=2.5), "presence_penalty"), (dict(frequency_penalty=True), "frequency"),
                       (dict(logit_bias={97: 1.0}), "token ids"), (dict(logit_bias={3: 101.0}), "logit_bias"),
                       (dict(logit_bias=dict.fromkeys(range(301), 1.0)), "at most 300")):
        with pytest.raises(ValueError, match=match):
            engine.add(Sequence([1], max_new_tokens=1, **bad))
