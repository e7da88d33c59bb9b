"""models.lfm2.sampling: the distribution sample_next samples, its limits, no NaN at extreme
temperatures (a request may ask for any temperature the API allows), and a batch of rows with
their own settings sampled together giving each row what it gets alone."""
import pytest
import torch

from models.lfm2.sampling import NUCLEUS_CANDIDATES, draw, nucleus, sample_batch, sample_next


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


def test_min_p_keeps_tokens_within_its_share_of_the_most_likely():
    """p_j >= min_p * p_max stays: min_p 1 leaves only the most likely token, 0 is off, and
    a floor just under a token's ratio keeps it, just over drops it."""
    logits = torch.tensor([[3.0, 3.0 + torch.log(torch.tensor(0.5)).item(), 0.0, -4.0]])   # p1 / p0 = 0.5
    g = torch.Generator().manual_seed(7)
    assert {int(sample_next(logits, 1.0, min_p=1.0, generator=g)) for _ in range(200)} == {0}
    assert {int(sample_next(logits, 1.0, min_p=0.49, generator=g)) for _ in range(400)} == {0, 1}
    assert {int(sample_next(logits, 1.0, min_p=0.51, generator=g)) for _ in range(400)} == {0}
    assert len({int(sample_next(logits, 1.0, min_p=0.0, generator=g)) for _ in range(2000)}) == 4


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


@pytest.mark.parametrize("t, top_k, top_p, min_p", [pytest.param(*c, id="t={}-k={}-p={}-min_p={}".format(*c)) for c in
                                                    ((0.7, None, None, None), (1.3, 4, None, None),
                                                     (1.0, None, 0.8, None), (0.9, 5, 0.6, None),
                                                     (2.0, 50, 0.95, None), (1.0, None, None, 0.15),
                                                     (0.6, None, 0.9, 0.05), (1.5, 6, 0.97, 0.3))])
def test_draws_follow_transformers_warpers(t, top_k, top_p, min_p):
    """Independent reference: transformers' Temperature/TopK/TopP/MinP warpers, in the order
    its generate() applies them, on the same logits (no ties); 40k seeded draws in one call
    pass a chi-square test against their softmax, and a token the warpers remove is never drawn."""
    warpers = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(1, 9, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 2
    ref = warpers.TemperatureLogitsWarper(t)(None, logits.clone())
    if top_k is not None:
        ref = warpers.TopKLogitsWarper(top_k)(None, ref)
    if top_p is not None:
        ref = warpers.TopPLogitsWarper(top_p)(None, ref)
    if min_p is not None:
        ref = warpers.MinPLogitsWarper(min_p)(None, ref)
    want = ref.softmax(-1)[0]
    assert 0 < int((want > 0).sum()) < 9 or min_p is None     # min_p cases do cut the support
    n = 40_000
    draws = sample_next(logits.expand(n, -1), t, top_k, top_p, torch.Generator().manual_seed(12), min_p)
    counts = torch.bincount(draws, minlength=9).double()
    assert counts[want == 0].sum() == 0
    kept = want > 0
    chi2 = ((counts[kept] - n * want[kept]) ** 2 / (n * want[kept])).sum().item()
    dof = int(kept.sum()) - 1
    assert chi2 < dof + 5 * (2 * max(dof, 1)) ** 0.5 + 10, (chi2, counts / n, want)


def test_draw_follows_the_probabilities_and_never_takes_a_zero():
    """The inverse-CDF draw: zeros at the start, between and after the mass (and a run of
    them) are never drawn; the rest come at their probabilities (chi-square over 40k rows)."""
    probs = torch.zeros(1, 100, dtype=torch.float64)
    probs[0, [1, 40, 41, 97]] = torch.tensor([0.15, 0.5, 1e-3, 0.349], dtype=torch.float64)
    n = 40_000
    got = draw(probs.expand(n, -1), torch.Generator().manual_seed(9))
    counts = torch.bincount(got, minlength=100).double()
    kept = probs[0] > 0
    assert counts[~kept].sum() == 0
    want = n * probs[0, kept]
    chi2 = ((counts[kept] - want) ** 2 / want).sum().item()
    assert chi2 < 3 + 5 * 6 ** 0.5 + 10, (chi2, counts[kept])
    unnormalised = draw(probs * 7.5, torch.Generator().manual_seed(9))       # a total other than 1
    assert bool(kept[unnormalised])


def _nucleus_by_full_sort(logits, top_p):
    """Reference: the whole row sorted, a token dropped once the ones before it hold top_p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = (probs.cumsum(-1) - probs) >= top_p
    drop[..., 0] = False
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


@pytest.mark.parametrize("scale, top_p", [
    pytest.param(12.0, 0.9, id="peaked-within-candidates"),
    pytest.param(0.05, 0.9, id="flat-needs-the-whole-row"),
    pytest.param(1.0, 0.999, id="wide-nucleus"),
    pytest.param(8.0, 1e-9, id="only-the-top"),
])
def test_nucleus_keeps_what_a_full_sort_keeps(scale, top_p):
    """The candidates' fast path and its fallback keep exactly the tokens a sort of the whole
    row keeps, at LFM2's vocabulary, row by row (one row peaked, one flat in a batch too)."""
    g = torch.Generator().manual_seed(21)
    logits = torch.randn(3, 65536, generator=g, dtype=torch.float64) * scale
    logits[2] = torch.randn(65536, generator=g, dtype=torch.float64) * 0.01      # a flat row beside the others
    for rows in (logits[:1], logits):          # the first row alone; then beside a flat one
        got, want = nucleus(rows, top_p), _nucleus_by_full_sort(rows, top_p)
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        assert torch.equal(got[torch.isfinite(got)], want[torch.isfinite(want)])
    kept = torch.isfinite(got).sum(-1)
    assert kept.min() >= 1 and (scale != 12.0 or kept[0] < NUCLEUS_CANDIDATES < kept[2])


@pytest.mark.parametrize("vocab", [pytest.param(97, id="V=97"), pytest.param(65536, id="V=65536")])
def test_a_batch_gives_each_row_what_it_gets_alone(vocab):
    """Rows with their own settings (greedy, top-k, top-p, min-p, all, none) and generators,
    sampled in one call, each equal to sample_next on that row alone with a generator seeded
    alike, over a few steps (a greedy row leaves its generator untouched)."""
    settings = [(0.0, None, None, None), (0.8, 5, None, None), (1.3, None, 0.7, None), (0.5, None, None, 0.2),
                (1.0, 20, 0.9, 0.05), (2.0, None, None, None), (0.7, None, 1.0, 0.0)]
    g = torch.Generator().manual_seed(31)
    together = [torch.Generator().manual_seed(100 + i) for i in range(len(settings))]
    alone = [torch.Generator().manual_seed(100 + i) for i in range(len(settings))]
    for step in range(3):
        logits = torch.randn(len(settings), vocab, generator=g) * (1 + 5 * step)
        got = sample_batch(logits, *zip(*settings), together)
        want = [int(sample_next(logits[i:i + 1], t, k, p, alone[i], m)) for i, (t, k, p, m) in enumerate(settings)]
        assert got.tolist() == want, step
    assert together[0].initial_seed() == 100 and torch.equal(together[0].get_state(),
                                                               torch.Generator().manual_seed(100).get_state())
