"""Guards of the depthwise library that a mutation run found untested: validation at its
boundaries, the call cache never letting a call skip the validation its own arguments need,
slice_sum's cached taps following the weight, and auto's CPU rule counting the stride.
Each test names the bug it would catch."""
import pytest
import torch
import torch.nn.functional as F

from models.depthwise import auto, depthwise_conv1d, depthwise_conv2d, dispatch


def test_an_output_length_of_exactly_zero_is_refused():
    """L=10, K=11, no padding: n_out = 0 (not only negative lengths) is a ValueError, not an empty tensor."""
    with pytest.raises(ValueError, match="output size would be 0 < 1"):
        depthwise_conv1d(torch.randn(1, 4, 10), torch.randn(4, 1, 11), impl="slice_sum")


@pytest.mark.parametrize("impl", ["per_group", "slice_sum", "compiled", "fused", "native", "auto"])
@pytest.mark.parametrize("op, x, w", [
    pytest.param(depthwise_conv1d, (2, 3, 0), (3, 1, 3), id="conv1d-L0-pad2"),
    pytest.param(depthwise_conv2d, (1, 2, 0, 4), (2, 1, 1, 1), id="conv2d-H0-pad1"),
])
def test_an_empty_spatial_input_is_refused_whatever_the_padding(impl, op, x, w):
    """Padding alone would make an output (L=0, padding 2, K=3: 2 values): slice_sum, compiled
    and fused made one while per_group and native raised torch's RuntimeError, as F.conv does."""
    x, w = torch.randn(x), torch.randn(w)
    pad = 2 if x.dim() == 3 else 1
    with pytest.raises(RuntimeError):   # why a ValueError for every impl: torch's own conv refuses it
        (F.conv1d if x.dim() == 3 else F.conv2d)(x, w, padding=pad, groups=x.shape[1])
    with pytest.raises(ValueError, match="input size 0 in spatial dim 0"):
        op(x, w, padding=pad, impl=impl)


def test_a_two_dimensional_bias_is_refused():
    with pytest.raises(ValueError, match=r"bias must be \(C\*m,\) = \(4,\)"):
        depthwise_conv1d(torch.randn(1, 4, 10), torch.randn(4, 1, 3), torch.zeros(4, 1), impl="slice_sum")


def test_an_integer_x_is_refused_with_an_explicit_impl():
    """Not only by auto's dtype rule: slice_sum on an int64 x returned an int64 result."""
    x = torch.randint(0, 5, (1, 4, 10))
    with pytest.raises(ValueError, match="x must be a floating tensor"):
        depthwise_conv1d(x, torch.randint(0, 5, (4, 1, 3)), impl="slice_sum")


def test_a_weight_on_another_device_is_refused():
    with pytest.raises(ValueError, match="x's dtype and device"):
        depthwise_conv1d(torch.randn(1, 4, 10), torch.empty(4, 1, 3, device="meta"), impl="slice_sum")


@pytest.mark.parametrize("bad", [
    pytest.param(lambda x, w, b: (x.double(), w, b), id="x-dtype"),
    pytest.param(lambda x, w, b: (x, w, torch.zeros(8, 1)), id="bias-shape"),
    pytest.param(lambda x, w, b: (x, w, b.double()), id="bias-dtype"),
])
def test_a_cached_valid_call_does_not_let_a_bad_one_through(bad):
    """The call cache's key holds all validation depends on: after a valid call, a call differing
    only in x's dtype or the bias's shape / dtype is still refused."""
    dispatch.clear_caches()
    x, w, b = torch.randn(2, 8, 12), torch.randn(8, 1, 3), torch.randn(8)
    for impl in ("slice_sum", "native"):
        depthwise_conv1d(x, w, b, padding=1, impl=impl)                  # cached as valid
        with pytest.raises(ValueError):
            depthwise_conv1d(*bad(x, w, b), padding=1, impl=impl)


def test_the_call_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(dispatch, "_MAX_CACHE", 2)
    dispatch.clear_caches()
    w = torch.randn(4, 1, 3)
    for length in (10, 11, 12, 13):
        depthwise_conv1d(torch.randn(1, 4, length), w, impl="slice_sum")
        assert len(dispatch._CALLS) <= 2


def test_resolve_impl_without_an_impl_takes_use_impl():
    from models.depthwise import use_impl
    x, w = torch.randn(1, 4, 10), torch.randn(4, 1, 3)
    with use_impl("native"):
        assert dispatch.resolve_impl("conv1d", x, w, 1, (0, 0), 1) == "native"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_slice_sums_cached_taps_follow_an_in_place_weight_update(dtype):
    """In 2-byte dtypes the cached taps are float32 copies, not views: only the weight's version
    in their key makes an in-place update (load_state_dict, mul_) reach the next call."""
    x, w = torch.randn(1, 4, 16, dtype=dtype), torch.randn(4, 1, 3, dtype=dtype)
    depthwise_conv1d(x, w, padding=1, impl="slice_sum")
    with torch.no_grad():
        w.mul_(-3)
    got = depthwise_conv1d(x, w, padding=1, impl="slice_sum").float()
    want = F.conv1d(x.float(), w.float(), padding=1, groups=4)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_slice_sums_cached_taps_follow_the_channel_count():
    """One (8, 1, 3) weight used with C=8 (m=1), then C=4 (m=2): taps are cached per (C, m)."""
    w = torch.randn(8, 1, 3)
    for C in (8, 4):
        x = torch.randn(1, C, 16)
        torch.testing.assert_close(depthwise_conv1d(x, w, padding=1, impl="slice_sum"),
                                   F.conv1d(x, w, padding=1, groups=C))


def test_half_precision_slice_sum_accumulates_in_float32():
    """fp16, K=31 over 4096 samples: within 2x of native's error against float64 (fp16 sums
    drifted ~7x further)."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 8, 4096, generator=g), torch.randn(8, 1, 31, generator=g)
    ref = F.conv1d(x.double(), w.double(), padding=15, groups=8)
    err = {impl: (depthwise_conv1d(x.half(), w.half(), padding=15, impl=impl).double() - ref).abs().max().item()
           for impl in ("slice_sum", "native")}
    assert err["slice_sum"] <= 2 * err["native"], err


def test_autos_cpu_rule_counts_the_stride(monkeypatch):
    """batch 8, 144 x 56 x 56: stride 1 writes enough for the compiled loop, stride 2 a quarter
    of it, where oneDNN's kernel wins (native)."""
    monkeypatch.setattr(auto, "compiled_allowed", lambda: True)
    pick = lambda stride: auto.choose("conv2d", torch.device("cpu"), torch.float32, (8, 144, 56, 56),   # noqa: E731
                                      (144, 1, 3, 3), stride, 1)
    assert (pick(1), pick(2)) == ("compiled", "native")


def test_the_amd_per_group_exception_starts_at_batch_16(monkeypatch):
    monkeypatch.setattr(auto, "cpu_vendor", lambda: "amd")
    monkeypatch.setattr(auto, "compiled_allowed", lambda: True)
    pick = lambda batch: auto.choose("conv2d", torch.device("cpu"), torch.float32, (batch, 96, 112, 112),  # noqa: E731
                                     (96, 1, 3, 3), 2, 1)
    assert pick(16) == "per_group" and pick(15) != "per_group"
