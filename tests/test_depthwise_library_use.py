"""models.depthwise under PyTorch's function transforms, as a researcher's code uses nn.Conv:
torch.func (vmap over inputs or weights, grad, jvp, per-sample gradients). Each result is checked against F.conv1d/F.conv2d(groups=C) under
the same transform, the independent reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import randn
from torch.func import functional_call, grad, jvp, vmap

from models.depthwise import DepthwiseConv2d, depthwise_conv1d

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
