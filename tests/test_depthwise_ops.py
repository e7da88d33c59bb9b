"""models.depthwise ops: every impl against the float64 block-diagonal dense reference.

Fixed named cases, hypothesis sweeps over odd shapes / strides / dilations / padding kinds /
channel multipliers / non-contiguous and channels_last inputs, dtypes, slice_sum gradients,
a couple of `compiled` shapes (compilation is slow on 2 cores), and validation errors.
Launch counts and dispatch live in test_profiling.py / below.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import DEV, TOL, assert_matches, randn, reference_conv

from models.depthwise import depthwise_conv1d, depthwise_conv2d, fused

FUSED_OK = fused.available(DEV)
EAGER = ["per_group", "slice_sum", "native"]          # cheap everywhere; hypothesis draws from these
IMPL_PARAMS = [pytest.param(i, id=i) for i in EAGER + ["auto"]] + [
    pytest.param("fused", id="fused", marks=[pytest.mark.fused, pytest.mark.skipif(
        not FUSED_OK, reason="fused needs CUDA or TRITON_INTERPRET=1 with triton")])]
DTYPES = [pytest.param(d, id=str(d).removeprefix("torch.")) for d in TOL]
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _noncontig(x: torch.Tensor, how: str) -> torch.Tensor:
    """Same values as x, other strides: 'T' via a transposed buffer, 'slice' via a wider buffer."""
    if how == "T":                                   # (B, C, L) view of a (B, L, C) tensor
        return x.transpose(1, -1).contiguous().transpose(1, -1)
    if how == "slice":                               # every other element of a 2x wider last dim
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    if how == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ------------------------------------------------------------------ fixed cases, every impl
CASES_1D = [  # B, C, L, K, m, stride, padding, dilation, bias
    pytest.param(2, 5, 17, 3, 1, 1, "causal", 1, True, id="causal_k3"),
    pytest.param(1, 7, 16, 4, 1, 1, "same", 2, False, id="same_even_k_dil2"),
    pytest.param(3, 4, 23, 5, 2, 3, 2, 1, True, id="mult2_stride3"),
    pytest.param(2, 3, 9, 1, 3, 2, "valid", 1, True, id="k1_mult3"),
    pytest.param(1, 6, 12, 3, 1, 2, (3, 1), 2, False, id="explicit_sides"),
    pytest.param(2, 1, 5, 5, 1, 1, 0, 1, True, id="single_out"),
]
CASES_2D = [  # B, C, H, W, (KH, KW), m, stride, padding, dilation, bias, layout
    pytest.param(2, 6, 9, 11, (3, 3), 1, 1, 1, 1, True, "contig", id="mobilenet_3x3"),
    pytest.param(1, 5, 10, 7, (3, 3), 1, 2, 1, 1, False, "channels_last", id="s2_channels_last"),
    pytest.param(2, 3, 8, 9, (2, 3), 2, 1, "same", (2, 1), True, "contig", id="same_even_kh_mult2"),
    pytest.param(1, 4, 7, 13, (1, 5), 1, (2, 1), (0, 0, 1, 3), 1, True, "T", id="asym_pad_transposed"),
]


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@pytest.mark.parametrize("B,C,L,K,m,stride,padding,dilation,bias", CASES_1D)
def test_conv1d_cases(impl, B, C, L, K, m, stride, padding, dilation, bias):
    g = torch.Generator().manual_seed(B * 100 + C * 10 + K)
    x, w = randn(B, C, L, gen=g), randn(C * m, 1, K, gen=g)
    b = randn(C * m, gen=g) if bias else None
    out = depthwise_conv1d(x, w, b, stride=stride, padding=padding, dilation=dilation, impl=impl)
    assert_matches(out, reference_conv(x, w, b, stride=stride, padding=padding, dilation=dilation),
                   torch.float32)


@pytest.mark.parametrize("impl", IMPL_PARAMS)
@pytest.mark.parametrize("B,C,H,W,k,m,stride,padding,dilation,bias,layout", CASES_2D)
def test_conv2d_cases(impl, B, C, H, W, k, m, stride, padding, dilation, bias, layout):
    g = torch.Generator().manual_seed(B * 100 + C * 10 + H)
    x, w = _noncontig(randn(B, C, H, W, gen=g), layout), randn(C * m, 1, *k, gen=g)
    b = randn(C * m, gen=g) if bias else None
    out = depthwise_conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, impl=impl)
    assert_matches(out, reference_conv(x, w, b, stride=stride, padding=padding, dilation=dilation),
                   torch.float32)
    if layout == "channels_last":                  # PyTorch's rule: the output follows x
        assert out.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ hypothesis sweeps
@st.composite
def conv1d_calls(draw):
    K, dilation = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    kinds = ["int", "sides", "valid", "causal"] + (["same"] if stride == 1 else [])
    kind = draw(st.sampled_from(kinds))
    padding = {"int": draw(st.integers(0, 4)), "sides": (draw(st.integers(0, 4)), draw(st.integers(0, 4))),
               "valid": "valid", "causal": "causal", "same": "same"}[kind]
    lo_hi = {"int": 2 * (padding if isinstance(padding, int) else 0), "sides": sum(padding) if kind == "sides" else 0,
             "valid": 0, "causal": dilation * (K - 1), "same": dilation * (K - 1)}[kind]
    min_len = max(1, dilation * (K - 1) + 1 - lo_hi)       # at least one output position
    L = draw(st.integers(min_len, min_len + 20))
    return dict(B=draw(st.integers(1, 3)), C=draw(st.integers(1, 9)), L=L, K=K, m=draw(st.integers(1, 3)),
                stride=stride, padding=padding, dilation=dilation, bias=draw(st.booleans()),
                layout=draw(st.sampled_from(["contig", "T", "slice"])), seed=draw(st.integers(0, 2**16)))


SWEEP_DTYPES = st.sampled_from([torch.float32, torch.float32, torch.float16, torch.bfloat16])


@HYP
@given(call=conv1d_calls(), impl=st.sampled_from(EAGER), dtype=SWEEP_DTYPES)
def test_conv1d_property(call, impl, dtype):
    c, g = call, torch.Generator().manual_seed(call["seed"])
    x = _noncontig(randn(c["B"], c["C"], c["L"], dtype=dtype, gen=g), c["layout"])
    w = randn(c["C"] * c["m"], 1, c["K"], dtype=dtype, gen=g)
    b = randn(c["C"] * c["m"], dtype=dtype, gen=g) if c["bias"] else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    assert_matches(depthwise_conv1d(x, w, b, impl=impl, **kw), reference_conv(x, w, b, **kw), dtype)


@st.composite
def conv2d_calls(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kind = draw(st.sampled_from(["int", "hw", "sides", "valid"] + (["same"] if s == (1, 1) else [])))
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    padding = {"int": pads[0], "hw": (pads[0], pads[1]), "sides": tuple(pads), "valid": "valid", "same": "same"}[kind]
    extra = {"int": (2 * pads[0],) * 2, "hw": (2 * pads[0], 2 * pads[1]), "sides": (pads[0] + pads[1], pads[2] + pads[3]),
             "valid": (0, 0), "same": (d[0] * (k[0] - 1), d[1] * (k[1] - 1))}[kind]
    size = [max(1, di * (ki - 1) + 1 - e) + draw(st.integers(0, 6)) for ki, di, e in zip(k, d, extra)]
    return dict(B=draw(st.integers(1, 2)), C=draw(st.integers(1, 6)), H=size[0], W=size[1], k=k,
                m=draw(st.integers(1, 2)), stride=s, padding=padding, dilation=d, bias=draw(st.booleans()),
                layout=draw(st.sampled_from(["contig", "channels_last", "slice"])), seed=draw(st.integers(0, 2**16)))


@HYP
@given(call=conv2d_calls(), impl=st.sampled_from(EAGER), dtype=SWEEP_DTYPES)
def test_conv2d_property(call, impl, dtype):
    c, g = call, torch.Generator().manual_seed(call["seed"])
    x = _noncontig(randn(c["B"], c["C"], c["H"], c["W"], dtype=dtype, gen=g), c["layout"])
    w = randn(c["C"] * c["m"], 1, *c["k"], dtype=dtype, gen=g)
    b = randn(c["C"] * c["m"], dtype=dtype, gen=g) if c["bias"] else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    out = depthwise_conv2d(x, w, b, impl=impl, **kw)
    assert_matches(out, reference_conv(x, w, b, **kw), dtype)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in EAGER])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(impl, dtype):
    g = torch.Generator().manual_seed(7)
    x1, w1, b1 = randn(2, 6, 21, dtype=dtype, gen=g), randn(12, 1, 4, dtype=dtype, gen=g), randn(12, dtype=dtype, gen=g)
    out = depthwise_conv1d(x1, w1, b1, padding="causal", dilation=2, impl=impl)
    assert_matches(out, reference_conv(x1, w1, b1, padding="causal", dilation=2), dtype)
    x2 = _noncontig(randn(2, 5, 9, 8, dtype=dtype, gen=g), "channels_last")
    w2, b2 = randn(5, 1, 3, 3, dtype=dtype, gen=g), randn(5, dtype=dtype, gen=g)
    assert_matches(depthwise_conv2d(x2, w2, b2, stride=2, padding=1, impl=impl),
                   reference_conv(x2, w2, b2, stride=2, padding=1), dtype)


# ------------------------------------------------------------------ gradients (slice_sum)
@pytest.mark.parametrize("op,shape,wshape,kw", [
    pytest.param("1d", (2, 3, 11), (6, 1, 3), dict(stride=2, padding="causal", dilation=2), id="conv1d_mult2"),
    pytest.param("2d", (1, 4, 7, 6), (4, 1, 3, 2), dict(stride=(1, 2), padding=(1, 0, 2, 1)), id="conv2d_asym"),
])
def test_slice_sum_gradients_match_conv(op, shape, wshape, kw):
    g = torch.Generator().manual_seed(3)
    x = randn(*shape, dtype=torch.float64, gen=g).requires_grad_()
    w = randn(*wshape, dtype=torch.float64, gen=g).requires_grad_()
    b = randn(wshape[0], dtype=torch.float64, gen=g).requires_grad_()
    fn = depthwise_conv1d if op == "1d" else depthwise_conv2d
    out = fn(x, w, b, impl="slice_sum", **kw)
    ref = reference_conv(x, w, b, **kw)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device)
    got = torch.autograd.grad(out, (x, w, b), grad_out)
    want = torch.autograd.grad(ref, (x, w, b), grad_out)
    for name, a, e in zip("xwb", got, want):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10, msg=lambda m: f"grad {name}: {m}")
    assert torch.autograd.gradcheck(lambda *t: fn(*t, impl="slice_sum", **kw), (x, w, b))


# ------------------------------------------------------------------ compiled (slow: two shapes)
@pytest.mark.parametrize("op,shape,wshape,kw", [
    pytest.param("1d", (2, 6, 19), (12, 1, 3), dict(padding="causal"), id="conv1d_causal_mult2"),
    pytest.param("2d", (1, 5, 8, 9), (5, 1, 3, 3), dict(stride=2, padding=1), id="conv2d_s2_channels_last"),
])
def test_compiled_matches_reference_and_warms_once(op, shape, wshape, kw):
    from models.depthwise import compiled
    g = torch.Generator().manual_seed(5)
    x, w, b = randn(*shape, gen=g), randn(*wshape, gen=g), randn(wshape[0], gen=g)
    if op == "2d":
        x = x.contiguous(memory_format=torch.channels_last)
    fn = depthwise_conv1d if op == "1d" else depthwise_conv2d
    before = compiled.warm_shape_classes()
    out = fn(x, w, b, impl="compiled", **kw)
    assert compiled.warm_shape_classes() == before + 1
    assert_matches(out, reference_conv(x, w, b, **kw), torch.float32)
    out2 = fn(x, w * 2, b, impl="compiled", **kw)             # same shape class: no new compile
    assert compiled.warm_shape_classes() == before + 1
    assert_matches(out2, reference_conv(x, w * 2, b, **kw), torch.float32)
    from models.profiling import count_launches                # one generated kernel per call
    assert count_launches(fn, x, w, b, impl="compiled", **kw).aten_ops <= 2


# ------------------------------------------------------------------ validation
def _x1():
    return torch.zeros(2, 4, 10, device=DEV)


BAD = [  # (call, substring the ValueError must contain)
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 2, 3, device=DEV)), "(4*m, 1, K)", id="not_depthwise"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(6, 1, 3, device=DEV)), "(C*m, 1, K) = (4*m, 1, K)", id="weight_not_multiple"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 3, device=DEV)), "(4*m, 1, K)", id="weight_ndim"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 0, device=DEV)), "(4*m, 1, K)", id="kernel_empty"),
    pytest.param(lambda: depthwise_conv1d(_x1()[0], torch.zeros(4, 1, 3, device=DEV)), "(B, C, L)", id="x_unbatched"),
    pytest.param(lambda: depthwise_conv2d(_x1(), torch.zeros(4, 1, 3, 3, device=DEV)), "(B, C, H, W)", id="x2d_ndim"),
    pytest.param(lambda: depthwise_conv2d(torch.zeros(1, 3, 5, 5, device=DEV), torch.zeros(3, 1, 3, device=DEV)),
                 "(C*m, 1, KH, KW) = (3*m, 1, KH, KW)", id="weight2d_ndim"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(8, 1, 3, device=DEV), torch.zeros(4, device=DEV)),
                 "(C*m,) = (8,)", id="bias_shape"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, device=DEV), padding="full"),
                 "('valid', 'same', 'causal')", id="padding_string"),
    pytest.param(lambda: depthwise_conv2d(torch.zeros(1, 3, 5, 5, device=DEV), torch.zeros(3, 1, 3, 3, device=DEV),
                                          padding="causal"), "conv1d only", id="causal_2d"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, device=DEV), padding=-1), ">= 0", id="negative_pad"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, device=DEV), padding=(1, 2, 3)),
                 "(left, right)", id="padding_tuple_len"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, device=DEV), stride=0), "stride must be >= 1", id="stride0"),
    pytest.param(lambda: depthwise_conv2d(torch.zeros(1, 3, 5, 5, device=DEV), torch.zeros(3, 1, 3, 3, device=DEV),
                                          dilation=(1, 0)), "dilation must be >= 1", id="dilation0"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, device=DEV), padding="same", stride=2),
                 "needs stride 1", id="same_strided"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 12, device=DEV)), "dilation*(K-1)+1 = 12", id="too_short"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, dtype=torch.float64, device=DEV)),
                 "x's dtype and device", id="dtype_mismatch"),
    pytest.param(lambda: depthwise_conv1d(_x1().long(), torch.zeros(4, 1, 3, device=DEV).long()), "floating", id="int_x"),
    pytest.param(lambda: depthwise_conv1d(_x1(), torch.zeros(4, 1, 3, device=DEV), impl="cudnn"),
                 "('per_group', 'slice_sum', 'compiled', 'fused', 'native', 'auto')", id="unknown_impl"),
]


@pytest.mark.parametrize("call,expected", BAD)
def test_bad_input_raises_value_error_naming_expected(call, expected):
    with pytest.raises(ValueError) as err:
        call()
    assert expected in str(err.value), str(err.value)


@pytest.mark.parametrize("op, valid, invalid", [
    pytest.param("conv1d", dict(stride=1), dict(stride=True), id="stride-bool"),
    pytest.param("conv1d", dict(padding=1), dict(padding=1.0), id="padding-float"),
    pytest.param("conv2d", dict(stride=(1, 1)), dict(stride=(True, 1)), id="stride-tuple-bool"),
    pytest.param("conv2d", dict(dilation=2), dict(dilation=2.0), id="dilation-float"),
])
def test_rejection_does_not_depend_on_earlier_valid_calls(op, valid, invalid):
    """True == 1 and 1.0 == 1: a valid call cached first must not let the invalid one through."""
    fn, x = (depthwise_conv1d, randn(1, 3, 9)) if op == "conv1d" else (depthwise_conv2d, randn(1, 3, 9, 9))
    w = randn(3, 1, *(3,) * (x.dim() - 2))
    fn(x, w, impl="slice_sum", **valid)
    with pytest.raises(ValueError):
        fn(x, w, impl="slice_sum", **invalid)


def test_compiled_failure_is_a_clear_error_not_a_silent_fallback(monkeypatch):
    from models.depthwise import compiled

    def broken(*a, **k):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", broken)
    x, w = randn(1, 3, 13), randn(3, 1, 2)                    # a shape class no other test uses
    with pytest.raises(RuntimeError, match="impl='slice_sum'.*|could not torch.compile"):
        depthwise_conv1d(x, w, impl="compiled")
    assert not compiled.is_warm("conv1d", x, w, None, 1, (0, 0), 1)


def test_slice_sum_tap_cache_follows_in_place_weight_updates():
    """slice_sum caches its per-tap views on the weight (inference only); an in-place update
    (load_state_dict, copy_) must be seen by the next call, and autograd must still work."""
    x = torch.randn(2, 8, 11)
    w = torch.randn(8, 1, 3)
    with torch.no_grad():
        first = depthwise_conv1d(x, w, impl="slice_sum")
        w.mul_(2.0)                                         # bumps w's version counter
        second = depthwise_conv1d(x, w, impl="slice_sum")
    torch.testing.assert_close(second, 2.0 * first)
    torch.testing.assert_close(second, F.conv1d(x, w, groups=8))
    wg = w.clone().requires_grad_()
    depthwise_conv1d(x, wg, impl="slice_sum").sum().backward()
    assert wg.grad is not None and wg.grad.abs().sum() > 0


def test_slice_sum_tap_cache_follows_a_new_weight_storage():
    """`param.data = t` and vector_to_parameters swap the storage without bumping the version
    counter: the cached taps must follow the new values (they are keyed by data pointer too)."""
    conv = torch.nn.Conv2d(6, 6, 3, groups=6, bias=False)
    x = torch.randn(1, 6, 7, 7)
    with torch.no_grad():
        depthwise_conv2d(x, conv.weight, impl="slice_sum")          # fills the cache
        conv.weight.data = torch.randn_like(conv.weight)
        torch.testing.assert_close(depthwise_conv2d(x, conv.weight, impl="slice_sum"), conv(x))
        torch.nn.utils.vector_to_parameters(torch.randn(conv.weight.numel()), conv.parameters())
        torch.testing.assert_close(depthwise_conv2d(x, conv.weight, impl="slice_sum"), conv(x))


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in EAGER])
@pytest.mark.parametrize("shape, stride, kernel", [
    pytest.param((2, 2, 4, 3), (1, 2), (3, 3), id="w_out1-stride1x2"),      # what the property test found
    pytest.param((3, 5, 6, 4), (1, 3), (2, 2), id="w_out1-stride1x3"),
    pytest.param((2, 4, 3, 9), (2, 1), (3, 3), id="h_out1-stride2x1"),
])
def test_channels_last_batch_with_an_output_side_of_one(impl, shape, stride, kernel):
    """torch's CPU conv miscomputes per_group's channel slices of such batches (per_group.py
    copies them dense); every impl must still equal the reference."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], 1, *kernel, generator=g)
    out = depthwise_conv2d(x, w, None, stride=stride, impl=impl)
    assert_matches(out, reference_conv(x, w, None, stride=stride), torch.float32)
