"""models.depthwise under PyTorch's function transforms, as a researcher's code uses nn.Conv:
torch.func (vmap over inputs or weights, grad, jvp, per-sample gradients) and forward-mode AD
(torch.autograd.forward_ad). Each result is checked against F.conv1d/F.conv2d(groups=C) under
the same transform, the independent reference."""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from reference import DEV, randn
from torch.func import functional_call, grad, jvp, vmap

from models.depthwise import DepthwiseConv2d, auto, depthwise_conv1d, depthwise_conv2d, dispatch, fused, use_impl
from models.depthwise.short_conv import short_conv_block, short_conv_block_reference

FUSED = pytest.param("fused", id="fused", marks=[pytest.mark.fused, pytest.mark.skipif(
    not fused.available(DEV), reason="fused needs CUDA or TRITON_INTERPRET=1 with triton")])
PLAIN = [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "auto")]
F64 = dict(dtype=torch.float64)


def _conv1d_args(seed=0):
    g = torch.Generator().manual_seed(seed)
    return randn(3, 4, 9, gen=g, **F64), randn(8, 1, 3, gen=g, **F64), randn(8, gen=g, **F64)


# ------------------------------------------------------------------ torch.func
@pytest.mark.parametrize("impl", PLAIN)
def test_vmap_over_weights_equals_f_conv(impl):
    """A batch of filters (an ensemble, a hypernetwork's output) mapped with vmap: slice_sum's
    tap cache read the data pointer of vmap's BatchedTensor and raised 'Cannot access data
    pointer of Tensor that doesn't have storage'."""
    x, _, b = _conv1d_args()
    ws = randn(5, 8, 1, 3, **F64)
    want = vmap(lambda w: F.conv1d(x, w, b, padding=1, groups=4))(ws)
    got = vmap(lambda w: depthwise_conv1d(x, w, b, padding=1, impl=impl))(ws)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("impl", PLAIN)
def test_func_jvp_equals_f_conv(impl):
    x, w, b = _conv1d_args(1)
    tx, tw = torch.randn_like(x), torch.randn_like(w)
    want = jvp(lambda x, w: F.conv1d(F.pad(x, (2, 1)), w, b, stride=2, dilation=2, groups=4), (x, w), (tx, tw))
    got = jvp(lambda x, w: depthwise_conv1d(x, w, b, stride=2, padding=(2, 1), dilation=2, impl=impl),
              (x, w), (tx, tw))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("impl", PLAIN)
def test_per_sample_gradients_of_a_module(impl):
    """vmap(grad(...)) over a batch with the module's parameters given to functional_call."""
    torch.manual_seed(0)
    mod = DepthwiseConv2d(3, 6, (3, 2), stride=(2, 1), padding=1, impl=impl).double()
    params = {k: v.detach() for k, v in mod.named_parameters()}
    x = randn(4, 3, 7, 6, **F64)

    def loss(p, xi):
        return functional_call(mod, p, (xi[None],)).pow(2).sum()

    def loss_ref(p, xi):
        return F.conv2d(xi[None], p["weight"], p["bias"], stride=(2, 1), padding=1, groups=3).pow(2).sum()

    got = vmap(grad(loss), in_dims=(None, 0))(params, x)
    want = vmap(grad(loss_ref), in_dims=(None, 0))(params, x)
    torch.testing.assert_close(got, want)


def test_auto_never_hands_a_transform_to_compiled_or_fused(monkeypatch):
    """Under a torch.func transform the tensors are functorch wrappers, which neither a Triton
    kernel nor a torch.compile'd callable can take: whatever auto's rule picks, the call runs
    an impl that can (the same values)."""
    x = randn(2, 3, 6, 5, **F64)
    ws = randn(4, 3, 1, 3, 3, **F64)
    want = vmap(lambda w: F.conv2d(x, w, padding=1, groups=3))(ws)
    try:
        for pick in ("compiled", "fused"):
            monkeypatch.setattr(auto, "choose", lambda *a, pick=pick, **k: pick)
            dispatch.clear_caches()
            with use_impl("auto"):
                got = vmap(lambda w: depthwise_conv2d(x, w, padding=1))(ws)
            torch.testing.assert_close(got, want)
    finally:
        dispatch.clear_caches()     # no decision of the fake rule outlives the test


@pytest.mark.parametrize("impl", [pytest.param("compiled", id="compiled"), FUSED])
def test_explicit_compiled_or_fused_under_a_transform_says_what_to_use(impl):
    x, _, b = _conv1d_args()
    ws = randn(2, 8, 1, 3, **F64)
    with pytest.raises(ValueError, match="torch.func.*impl='slice_sum' or 'native'"):
        vmap(lambda w: depthwise_conv1d(x, w, b, padding=1, impl=impl))(ws)


# ------------------------------------------------------------------ forward-mode AD
@pytest.mark.parametrize("impl", PLAIN + [FUSED])
@pytest.mark.parametrize("grad_mode", [pytest.param(True, id="grad"), pytest.param(False, id="no_grad")])
def test_forward_ad_tangent_equals_f_conv(impl, grad_mode):
    """fused ran its kernel without autograd whenever no input required grad, so a dual input's
    tangent was dropped: unpack_dual(out).tangent was None (the Jacobian-vector product
    silently 0)."""
    x, w, b = _conv1d_args(2)
    tx, tw, tb = torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)
    with torch.set_grad_enabled(grad_mode), fwAD.dual_level():
        want = fwAD.unpack_dual(F.conv1d(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw), fwAD.make_dual(b, tb),
                                         padding=1, groups=4))
        got = fwAD.unpack_dual(depthwise_conv1d(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw),
                                                fwAD.make_dual(b, tb), padding=1, impl=impl))
        assert got.tangent is not None, "the tangent was dropped"
        torch.testing.assert_close(got.primal, want.primal)
        torch.testing.assert_close(got.tangent, want.tangent)


@pytest.mark.parametrize("impl", PLAIN + [FUSED])
def test_forward_ad_through_the_short_conv_block(impl):
    """LFM2's gated short conv with a dual weight: the slice_sum block built its (K, C) taps
    from weight.detach() (cached) whenever the weight did not require grad, dropping the tangent."""
    g = torch.Generator().manual_seed(3)
    bcx, w = randn(2, 5, 12, gen=g, **F64), randn(4, 1, 3, gen=g, **F64)
    tw = torch.randn_like(w)
    with fwAD.dual_level():
        want = fwAD.unpack_dual(short_conv_block_reference(bcx, fwAD.make_dual(w, tw))).tangent
        got = fwAD.unpack_dual(short_conv_block(bcx, fwAD.make_dual(w, tw), impl=impl)).tangent
    assert got is not None, "the tangent was dropped"
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("grad_mode", [pytest.param(True, id="grad"), pytest.param(False, id="no_grad")])
def test_forward_ad_tangent_through_compiled(grad_mode):
    """compiled ran its torch.compile'd callable on the dual inputs, which carries no tangent
    (warm or cold): unpack_dual(out).tangent was None, a silently zero JVP; auto picks compiled
    for some shapes, so an auto model's JVP was silently 0 there too."""
    x, w, b = _conv1d_args(4)
    tx, tw, tb = torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)
    depthwise_conv1d(x, w, b, padding=1, impl="compiled")          # warm, outside any dual level
    with torch.set_grad_enabled(grad_mode), fwAD.dual_level():
        want = fwAD.unpack_dual(F.conv1d(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw), fwAD.make_dual(b, tb),
                                         padding=1, groups=4))
        got = fwAD.unpack_dual(depthwise_conv1d(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw),
                                                fwAD.make_dual(b, tb), padding=1, impl="compiled"))
        assert got.tangent is not None, "the tangent was dropped"
        torch.testing.assert_close(got.primal, want.primal)
        torch.testing.assert_close(got.tangent, want.tangent)


def test_short_conv_ops_under_a_transform_never_run_compiled_or_fused(monkeypatch):
    """short_conv_block and conv1d_decode_step (LFM2's conv, public in models.depthwise) under
    vmap: auto's fused pick (CUDA) reached the Triton kernel with functorch wrappers ('Cannot
    access storage of BatchedTensorImpl') and its compiled pick raised the explicit-impl
    ValueError; auto runs slice_sum there, as the public conv ops do, and an explicit
    fused/compiled says what to use."""
    from models.depthwise.short_conv import conv1d_decode_step, conv1d_decode_step_reference
    g = torch.Generator().manual_seed(5)
    bcx, ws, x_new = randn(2, 5, 12, gen=g, **F64), randn(3, 4, 1, 3, gen=g, **F64), randn(2, 4, gen=g, **F64)
    state = randn(2, 4, 2, gen=g, **F64)
    want = vmap(lambda w: short_conv_block_reference(bcx, w))(ws)
    want_step = vmap(lambda w: conv1d_decode_step_reference(x_new, state.clone(), w))(ws)
    try:
        for pick in ("compiled", "fused"):
            monkeypatch.setattr(auto, "choose", lambda *a, pick=pick, **k: pick)
            dispatch.clear_caches()
            with use_impl("auto"):
                torch.testing.assert_close(vmap(lambda w: short_conv_block(bcx, w))(ws), want)
                got = vmap(lambda w: conv1d_decode_step(x_new, state.clone(), w))(ws)
                torch.testing.assert_close(got, want_step)
            for call in (lambda w: short_conv_block(bcx, w, impl=pick),
                         lambda w: conv1d_decode_step(x_new, state.clone(), w, impl=pick)):
                with pytest.raises(ValueError, match="torch.func.*impl='slice_sum' or 'native'"):
                    vmap(call)(ws)
    finally:
        dispatch.clear_caches()
