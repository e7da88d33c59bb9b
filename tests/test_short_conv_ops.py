"""LFM2's gated short-conv block and the decode step as public ops: `short_conv_block` /
`conv1d_decode_step` held to their plain-torch `*_reference` for every impl (the reference to
test_short_conv.py's loop-over-taps definition), impl resolution, shape validation, the
depthwise timer and launch counts, and slice_sum's one-token block. The fused kernels on
their own are test_short_conv.py's.
"""
from __future__ import annotations

import pytest
import torch

from fused_common import DEV, DTYPES, needs_fused
from models.depthwise import IMPLS
from test_short_conv import block_inputs, check, rand, ref_block


def _impls():
    marks = {"fused": [pytest.mark.fused, needs_fused]}
    return [pytest.param(name, id=name, marks=marks.get(name, [])) for name in (*IMPLS, "auto")]


def _sc():
    from models.depthwise import short_conv
    return short_conv


def test_reference_matches_loop_definition():
    sc = _sc()
    bcx, w, b, state = block_inputs(2, 9, 5, 4, dtype=torch.float64, seed=3)
    mask = torch.tensor([[1] * 9, [0] * 3 + [1] * 6], device=DEV)
    y_ref, s_ref = ref_block(bcx, w, b, state, mask)
    check(sc.short_conv_block_reference(bcx, w, b, conv_state=state, mask=mask), y_ref, torch.float64)
    check(state, s_ref, torch.float64)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("B,L,C,K,has_state,has_mask", [
    pytest.param(2, 13, 6, 4, True, True, id="prefill_state_mask"),
    pytest.param(1, 1, 5, 3, True, False, id="one_token"),
    pytest.param(2, 7, 4, 3, False, False, id="no_state"),
])
def test_block_every_impl_matches_reference(impl, B, L, C, K, has_state, has_mask):
    sc = _sc()
    bcx, w, b, state = block_inputs(B, L, C, K, seed=B + L + C)
    mask = (torch.arange(L, device=DEV)[None, :] >= torch.arange(B, device=DEV)[:, None] * 2) if has_mask else None
    ref_state = state.clone() if has_state else None
    state = state if has_state else None
    y_ref = sc.short_conv_block_reference(bcx, w, b, conv_state=ref_state, mask=mask)
    y = sc.short_conv_block(bcx, w, b, conv_state=state, mask=mask, impl=impl)
    assert y.shape == (B, L, C)
    check(y, y_ref, torch.float32)
    if has_state:
        check(state, ref_state, torch.float32)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("act", [pytest.param(None, id="linear"), pytest.param("silu", id="silu")])
def test_decode_step_every_impl_matches_reference(impl, act):
    sc = _sc()
    g = torch.Generator().manual_seed(21)
    B, C, K, T = 2, 7, 4, 3
    x, w, b = rand(B, C, T, gen=g), rand(C, 1, K, gen=g), rand(C, gen=g)
    state, ref_state = torch.zeros(B, C, K - 1, device=DEV), torch.zeros(B, C, K - 1, device=DEV)
    for t in range(T):
        ref = sc.conv1d_decode_step_reference(x[:, :, t], ref_state, w, b, activation=act)
        out = sc.conv1d_decode_step(x[:, :, t], state, w, b, activation=act, impl=impl)
        check(out, ref, torch.float32)
        check(state, ref_state, torch.float32)


def test_impl_none_follows_use_impl_and_decode_resolves_op_decode(monkeypatch):
    sc = _sc()
    from models.depthwise import dispatch, use_impl
    seen, real_resolve, real_conv = [], dispatch.resolve_impl, dispatch.depthwise_conv1d

    def resolve(op, *args, **kwargs):
        name = real_resolve(op, *args, **kwargs)
        seen.append((op, name))
        return name

    monkeypatch.setattr(dispatch, "resolve_impl", resolve)
    monkeypatch.setattr(dispatch, "depthwise_conv1d",
                        lambda *a, impl=None, **k: seen.append(("conv", impl)) or real_conv(*a, impl=impl, **k))
    bcx, w, b, state = block_inputs(1, 5, 3, 3, seed=1)
    with use_impl("per_group"):
        sc.short_conv_block(bcx, w, b, conv_state=state)
        sc.conv1d_decode_step(bcx[:, 0, :3], state, w, b)
    # (depthwise_conv1d resolves again inside: only the order of our own entries matters)
    ours = [op for op, _ in seen if op in ("decode", "conv")]
    assert seen[0] == ("conv1d", "per_group") and ours == ["conv", "decode", "conv"], seen
    assert all(name == "per_group" for _, name in seen), seen


@pytest.mark.parametrize("call,expected", [
    pytest.param(lambda sc, t: sc.short_conv_block(t["bcx"][..., :-1], t["w"]), "(B, L, 3*C)", id="bcx_not_3C"),
    pytest.param(lambda sc, t: sc.short_conv_block(t["bcx"], t["w"][:3]), "(C, 1, K) = (4, 1, K)", id="weight_C"),
    pytest.param(lambda sc, t: sc.short_conv_block(t["bcx"], t["w"], t["w"][:, 0, :2].reshape(-1)),
                 "bias must be (C,) = (4,)", id="bias_shape"),
    pytest.param(lambda sc, t: sc.short_conv_block(t["bcx"], t["w"], conv_state=t["state"][..., :1]),
                 "(B, C, K-1) = (2, 4, 2)", id="state_shape"),
    pytest.param(lambda sc, t: sc.short_conv_block(t["bcx"], t["w"], mask=t["mask"][:, :3]),
                 "(B, L) = (2, 5)", id="mask_shape"),
    pytest.param(lambda sc, t: sc.conv1d_decode_step(t["bcx"][:, 0], t["state"], t["w"]),
                 "(C, 1, K) = (12, 1, K)", id="decode_weight_vs_x"),
    pytest.param(lambda sc, t: sc.conv1d_decode_step(t["bcx"][:, 0, :4], t["state"][:1], t["w"]),
                 "(B, C, K-1) = (2, 4, 2)", id="decode_state_shape"),
    pytest.param(lambda sc, t: sc.conv1d_decode_step(t["bcx"][:, 0, :4], t["state"], t["w"], activation="gelu"),
                 "activation must be one of", id="decode_activation"),
])
def test_bad_shapes_raise_value_error_naming_expected(call, expected):
    bcx, w, _, state = block_inputs(2, 5, 4, 3, seed=0, strided=False)
    tensors = {"bcx": bcx, "w": w, "state": state, "mask": torch.ones(2, 5, device=DEV)}
    with pytest.raises(ValueError) as err:
        call(_sc(), tensors)
    assert expected in str(err.value)


def test_ops_record_into_depthwise_timer():
    from models import profiling
    sc = _sc()
    bcx, w, b, state = block_inputs(1, 4, 3, 3, seed=2)
    with profiling.depthwise_timer() as t:
        sc.short_conv_block(bcx, w, b, conv_state=state, impl="slice_sum")
        sc.conv1d_decode_step(bcx[:, 0, :3], state, w, b, impl="slice_sum")
    assert t.calls == 2 and t.seconds > 0


@pytest.mark.parametrize("impl,grows", [pytest.param("per_group", True, id="per_group_O(C)"),
                                        pytest.param("slice_sum", False, id="slice_sum_O(1)")])
def test_decode_launches_scale_with_channels_only_for_per_group(impl, grows):
    """The decode step composes depthwise_conv1d, so per_group's O(C) ops show at decode too."""
    from models import profiling
    sc = _sc()

    def ops(C):
        x, state, w = torch.randn(1, C, device=DEV), torch.zeros(1, C, 3, device=DEV), torch.randn(C, 1, 4, device=DEV)
        sc.conv1d_decode_step(x, state, w, impl=impl)            # warm caches
        return profiling.count_launches(sc.conv1d_decode_step, x, state, w, impl=impl).aten_ops

    extra = ops(20) - ops(4)
    assert (extra >= 16) if grows else (extra == 0), extra


# ------------------------------------------------------------------ slice_sum block, one token
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [1, 3, 7])
@pytest.mark.parametrize("has_state,has_mask,bias", [
    pytest.param(True, False, True, id="state_bias"),
    pytest.param(True, True, False, id="state_mask"),
    pytest.param(False, False, True, id="zero_context"),
])
def test_slice_sum_one_token_block_matches_loop_definition(dtype, K, has_state, has_mask, bias):
    """The decode-sized path (one multiply and one sum over the (B, K, C) window) against the
    float64 loop definition, on a strided bcx, every dtype, with/without state, mask, bias."""
    sc = _sc()
    bcx, w, b, state = block_inputs(3, 1, 11, K, dtype=dtype, seed=K * 7 + has_mask)
    mask = torch.tensor([[1], [0], [1]], device=DEV) if has_mask else None
    b = b if bias else None
    y_ref, s_ref = ref_block(bcx, w, b, state if has_state else None, mask)
    y = sc.short_conv_block(bcx, w, b, conv_state=state if has_state else None, mask=mask, impl="slice_sum")
    check(y, y_ref, dtype)
    if has_state:
        check(state, s_ref, dtype)


def test_slice_sum_block_taps_follow_in_place_weight_updates_and_keep_gradients():
    """The (K, C) taps are cached on the weight: an in-place update (load_state_dict, copy_
    under no_grad) must reach the next call; under autograd they come from the weight itself."""
    sc = _sc()
    bcx, w, b, state = block_inputs(2, 1, 6, 3, seed=5)
    first = sc.short_conv_block(bcx, w, b, conv_state=state.clone(), impl="slice_sum")
    with torch.no_grad():
        w.mul_(-2.0)
    y_ref, _ = ref_block(bcx, w, b, state, None)
    again = sc.short_conv_block(bcx, w, b, conv_state=state.clone(), impl="slice_sum")
    check(again, y_ref, torch.float32)
    assert not torch.allclose(first, again)
    wg = w.detach().clone().requires_grad_(True)
    sc.short_conv_block(bcx, wg, b, conv_state=state.clone(), impl="slice_sum").sum().backward()
    wr = w.detach().clone().requires_grad_(True)
    sc.short_conv_block_reference(bcx, wr, b, conv_state=state.clone()).sum().backward()
    torch.testing.assert_close(wg.grad, wr.grad)


def test_slice_sum_one_token_block_ops_do_not_grow_with_taps():
    """Decoding LFM3's K=7 conv costs the ops of LFM2's K=3: the window is summed in one op."""
    from models import profiling
    sc = _sc()

    def ops(K, L):
        bcx, w, b, state = block_inputs(1, L, 64, K, seed=K)
        sc.short_conv_block(bcx, w, b, conv_state=state, impl="slice_sum")       # warm the taps cache
        return profiling.count_launches(sc.short_conv_block, bcx, w, b, conv_state=state, impl="slice_sum").aten_ops

    assert ops(7, 1) == ops(3, 1) <= 14
    assert ops(7, 4) > ops(3, 4)         # a prefill still pays per tap
