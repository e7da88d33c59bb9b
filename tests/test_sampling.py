"""models.lfm2.generation.sample_next: the distribution it samples, its limits, and no NaN at
extreme temperatures (a request may ask for any temperature the API allows)."""
import pytest
import torch

from models.lfm2.generation import sample_next


def test_samples_follow_softmax_of_logits_over_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 30.0 - 30.0]])
    g = torch.Generator().manual_seed(0)
    n, t = 20_000, 0.7
    draws = torch.stack([sample_next(logits, t, generator=g) for _ in range(n)]).flatten()
    freq = torch.bincount(draws, minlength=5).float() / n
    want = torch.softmax(logits[0] / t, -1)
    assert torch.allclose(freq, want, atol=0.015), (freq, want)


@pytest.mark.parametrize("t", [pytest.param(t, id=f"t={t:g}") for t in (1e-300, 1e-30, 1e-6)])
def test_tiny_temperature_is_greedy_not_nan(t):
    logits = torch.randn(4, 97, generator=torch.Generator().manual_seed(1)) * 5
    got = sample_next(logits, t, generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, logits.argmax(-1))


def test_huge_logits_and_temperatures_stay_finite():
    logits = torch.tensor([[1e30, -1e30, 0.0], [3e38, 3e38, -3e38]])
    for t in (1e-300, 1.0, 100.0):
        got = sample_next(logits, t, generator=torch.Generator().manual_seed(3))
        assert got[0] == 0 or t == 100.0
        assert 0 <= int(got.min()) and int(got.max()) < 3


def test_top_k_and_top_p_limit_the_support():
    logits = torch.tensor([[5.0, 4.0, 3.0, -2.0]])
    g = torch.Generator().manual_seed(4)
    assert {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(300)} == {0, 1}
    assert {int(sample_next(logits, 1.0, top_p=0.5, generator=g)) for _ in range(300)} == {0}


@pytest.mark.parametrize("top_p", [pytest.param(p, id=f"top_p={p:g}") for p in (1.6e-175, 5e-324, 1e-9)])
def test_a_vanishing_top_p_keeps_the_most_likely_token(top_p):
    """A top_p that rounds to 0 in float32 (the fuzzer sent 1.6e-175) must not drop every token."""
    logits = torch.randn(3, 264, generator=torch.Generator().manual_seed(5)) * 0.02
    got = sample_next(logits, 1.0, top_k=508091, top_p=top_p, generator=torch.Generator().manual_seed(6))
    assert torch.equal(got, logits.argmax(-1))


@pytest.mark.parametrize("t, top_k, top_p", [pytest.param(*c, id="t={}-k={}-p={}".format(*c)) for c in
                                             ((0.7, None, None), (1.3, 4, None), (1.0, None, 0.8),
                                              (0.9, 5, 0.6), (2.0, 50, 0.95))])
def test_draws_follow_transformers_warpers(t, top_k, top_p):
    """Independent reference: transformers' Temperature/TopK/TopP warpers on the same logits
    (no ties); 40k seeded draws in one call pass a chi-square test against their softmax, and a
    token the warpers remove is never drawn."""
    warpers = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(1, 9, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 2
    ref = warpers.TemperatureLogitsWarper(t)(None, logits.clone())
    if top_k is not None:
        ref = warpers.TopKLogitsWarper(top_k)(None, ref)
    if top_p is not None:
        ref = warpers.TopPLogitsWarper(top_p)(None, ref)
    want = ref.softmax(-1)[0]
    n = 40_000
    draws = sample_next(logits.expand(n, -1), t, top_k, top_p, torch.Generator().manual_seed(12))
    counts = torch.bincount(draws, minlength=9).double()
    assert counts[want == 0].sum() == 0
    kept = want > 0
    chi2 = ((counts[kept] - n * want[kept]) ** 2 / (n * want[kept])).sum().item()
    dof = int(kept.sum()) - 1
    assert chi2 < dof + 5 * (2 * max(dof, 1)) ** 0.5 + 10, (chi2, counts / n, want)
