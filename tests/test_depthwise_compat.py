"""models.depthwise inside the PyTorch features a user's model meets: autocast, torch.compile
of a model holding the modules, and nn.Conv-like construction errors. Each case is checked
against F.conv1d/F.conv2d (or nn.Conv) under the same feature, the independent reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import DEV, assert_matches, randn
from torch import nn

from models.depthwise import DepthwiseConv1d, DepthwiseConv2d, depthwise_conv1d, depthwise_conv2d, fused

FUSED = pytest.param("fused", id="fused", marks=[pytest.mark.fused, pytest.mark.skipif(
    not fused.available(DEV), reason="fused needs CUDA or TRITON_INTERPRET=1 with triton")])
IMPLS = [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "auto")] + [FUSED]
DEVICE_TYPE = torch.device(DEV).type


# ------------------------------------------------------------------ autocast
@pytest.mark.parametrize("impl", IMPLS + [pytest.param("compiled", id="compiled")])
def test_autocast_casts_like_f_conv(impl):
    """Under autocast F.conv casts x, weight and bias (float32) to the autocast dtype and returns
    that dtype; every impl must too, whatever impl ran (the output dtype must not depend on it)."""
    g = torch.Generator().manual_seed(1)
    x, w, b = randn(2, 4, 11, gen=g), randn(8, 1, 3, gen=g), randn(8, gen=g)
    with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        want = F.conv1d(x, w, b, padding=1, groups=4)
        out = depthwise_conv1d(x, w, b, padding=1, impl=impl)
    assert want.dtype == torch.bfloat16
    assert_matches(out, want.double(), torch.bfloat16)


@pytest.mark.parametrize("impl", IMPLS)
def test_autocast_low_precision_activations_meet_float32_parameters(impl):
    """The common mixed-precision model: a Linear under autocast hands the conv bfloat16
    activations while the conv's parameters stay float32. nn.Conv2d(groups=C) runs (autocast
    casts the parameters); the depthwise module must too, and its float32 weight gets a gradient."""
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 12, 3, padding=1, groups=6).to(DEV)
    mod = DepthwiseConv2d(6, 12, 3, padding=1, impl=impl).to(DEV)
    mod.load_state_dict(conv.state_dict())
    x = randn(2, 6, 7, 5, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        want, out = conv(x), mod(x)
    assert out.dtype == want.dtype == torch.bfloat16
    assert_matches(out.detach(), want.detach().double(), torch.bfloat16)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.float().sum().backward()
    assert mod.weight.grad is not None and mod.weight.grad.dtype == torch.float32


def test_autocast_leaves_float64_alone():
    """autocast casts only float32/float16/bfloat16 tensors, as F.conv does: float64 stays float64."""
    x, w = randn(1, 3, 9, dtype=torch.float64), randn(3, 1, 2, dtype=torch.float64)
    with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        out = depthwise_conv1d(x, w, impl="slice_sum")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.conv1d(x, w, groups=3))


# ------------------------------------------------------------------ torch.compile of a user model
def _model(impl):
    """A small user model: causal short conv (m=2) + SiLU, and a channels_last 3x3 conv2d."""
    torch.manual_seed(3)
    conv1 = DepthwiseConv1d(4, 8, 3, padding="causal", dilation=2, impl=impl)
    conv2 = DepthwiseConv2d(8, 8, 3, stride=2, padding=1, bias=False, impl=impl)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = conv1, conv2

        def forward(self, x):                                  # x (B, 4, L) -> (B, 8, L//2, 3)
            y = torch.nn.functional.silu(self.conv1(x))        # (B, 8, L)
            y = y.unsqueeze(-1).expand(-1, -1, -1, 5).contiguous(memory_format=torch.channels_last)
            return self.conv2(y)                               # (B, 8, ceil(L/2), 3)
    return Net().to(DEV)


@pytest.mark.parametrize("impl", IMPLS + [pytest.param("compiled", id="compiled")])
def test_torch_compile_of_a_model_with_depthwise_modules(impl):
    """torch.compile(model) must give the eager model's values and gradients for every impl.
    aot_eager runs dynamo and AOTAutograd (what inductor compiles from) without a C++ build."""
    model = _model(impl)
    x = randn(2, 4, 9).requires_grad_()
    want = model(x)
    (gx_want,) = torch.autograd.grad(want.sum(), x)
    torch._dynamo.reset()
    got = torch.compile(model, backend="aot_eager")(x)
    (gx,) = torch.autograd.grad(got.sum(), x)
    assert_matches(got.detach(), want.detach().double(), torch.float32)
    assert_matches(gx, gx_want.double(), torch.float32)


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "compiled",
                                                                    "auto", None)])
def test_plain_torch_impls_trace_without_graph_breaks(impl):
    """fullgraph=True (and torch.export) need the depthwise call traceable: the policy, the
    validation and the impl's torch code, without a graph break. (fused is a Triton launch:
    it runs eagerly behind a graph break instead.)"""
    model = _model(impl)
    x = randn(2, 4, 9)
    torch._dynamo.reset()
    got = torch.compile(model, backend="eager", fullgraph=True)(x)
    assert_matches(got, model(x).double(), torch.float32)
    got = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)(randn(3, 4, 12))
    assert got.shape == (3, 8, 6, 3)


# ------------------------------------------------------------------ construction errors
@pytest.mark.parametrize("cls, kwargs, expected", [
    pytest.param(DepthwiseConv1d, dict(kernel_size=0), "kernel_size must be >= 1", id="kernel0"),
    pytest.param(DepthwiseConv2d, dict(kernel_size=(3, 0)), "kernel_size must be >= 1", id="kernel2d-0"),
    pytest.param(DepthwiseConv1d, dict(kernel_size=3.0), "kernel_size must be an int", id="kernel-float"),
    pytest.param(DepthwiseConv1d, dict(kernel_size=3, padding="full"), "('valid', 'same', 'causal')", id="padding-string"),
    pytest.param(DepthwiseConv2d, dict(kernel_size=3, padding="causal"), "conv1d only", id="causal-2d"),
    pytest.param(DepthwiseConv1d, dict(kernel_size=3, padding="same", stride=2), "needs stride 1", id="same-strided"),
    pytest.param(DepthwiseConv1d, dict(kernel_size=3, padding=-1), ">= 0", id="negative-padding"),
    pytest.param(DepthwiseConv2d, dict(kernel_size=3, stride=(1, 0)), "stride must be >= 1", id="stride0"),
    pytest.param(DepthwiseConv1d, dict(kernel_size=3, dilation=0), "dilation must be >= 1", id="dilation0"),
])
def test_module_construction_rejects_what_the_op_would(cls, kwargs, expected):
    """A module that can never run must fail where it is built, with the op's ValueError (nn.Conv
    rejects bad padding strings and strided 'same' at construction too), not at its first
    forward (in a server, the first request) or with a ZeroDivisionError from the init."""
    with pytest.raises(ValueError) as err:
        cls(4, 8, **kwargs)
    assert expected in str(err.value), str(err.value)


# ------------------------------------------------------------------ second-order gradients
@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_penalty_reaches_the_weight(impl):
    """A gradient penalty (WGAN-GP, R1) differentiates the input gradient again: with an all-ones
    grad_out (loss = out.sum()) that gradient must still carry the weight's graph, as F.conv's
    does; a backward that drops it makes the penalty's share of w.grad silently zero."""
    g = torch.Generator().manual_seed(4)
    x0, w0 = randn(2, 3, 8, dtype=torch.float64, gen=g), randn(6, 1, 3, dtype=torch.float64, gen=g)

    def w_grad(conv):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out = conv(x, w)
        (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)   # (2, 3, 8), a function of w
        (out.square().mean() + gx.square().sum()).backward()
        return w.grad

    want = w_grad(lambda x, w: F.conv1d(x, w, padding=1, stride=2, groups=3))
    got = w_grad(lambda x, w: depthwise_conv1d(x, w, padding=1, stride=2, impl=impl))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradgradcheck(impl):
    g = torch.Generator().manual_seed(5)
    x = randn(1, 2, 5, 4, dtype=torch.float64, gen=g).requires_grad_()
    w = randn(4, 1, 2, 3, dtype=torch.float64, gen=g).requires_grad_()
    b = randn(4, dtype=torch.float64, gen=g).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda *t: depthwise_conv2d(*t, stride=(2, 1), padding=(1, 0, 1, 1), impl=impl), (x, w, b))


def test_graph_break_decorator_on_torch_without_a_disable_reason():
    """The pin admits torch 2.4, whose torch.compiler.disable takes no `reason` (2.8 added it):
    the decorator must still apply there, or importing models.depthwise fails."""
    from unittest import mock
    from models.depthwise import dispatch
    real = torch.compiler.disable

    def disable_before_2_8(fn=None, recursive=True):
        return real(fn, recursive)

    with mock.patch.object(torch.compiler, "disable", disable_before_2_8):
        wrapped = dispatch._graph_break("why")(lambda t: t * 2)
    assert torch.equal(wrapped(torch.ones(3)), torch.full((3,), 2.0))
