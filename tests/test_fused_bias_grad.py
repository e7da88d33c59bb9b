"""The fused ops with a bias that is not a plain contiguous vector, and under autograd.

The Triton kernels read bias[c] at b_ptr + c and have no backward of their own: a strided or
broadcast bias must still give F.conv's answer (not neighbouring memory), and a gradient
through a fused op must equal the gradient through F.conv (fused_autograd recomputes the
reference for it), not be silently dropped. Float64 on fresh random inputs, odd sizes.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fused_common import DEV, needs_fused
from models.depthwise import conv1d_decode_step, depthwise_conv1d, depthwise_conv2d, short_conv_block
from models.depthwise.short_conv import conv1d_decode_step_reference, short_conv_block_reference

pytestmark = [pytest.mark.fused, needs_fused]

C = 7


def rand(*shape, requires_grad=False):
    return torch.randn(*shape, dtype=torch.float64, device=DEV).requires_grad_(requires_grad)


def odd_biases():
    """A bias viewed with stride 2 out of a wider tensor, and one value broadcast (stride 0)."""
    return [pytest.param(lambda: rand(C, 2)[:, 0], id="strided"),
            pytest.param(lambda: rand(1).expand(C), id="broadcast")]


@pytest.mark.parametrize("make_bias", odd_biases())
def test_conv1d_conv2d_odd_bias(make_bias):
    bias = make_bias()
    assert not bias.is_contiguous()
    x1, w1 = rand(2, C, 11), rand(C, 1, 3)
    torch.testing.assert_close(depthwise_conv1d(x1, w1, bias, padding=1, impl="fused"),
                               F.conv1d(x1, w1, bias, padding=1, groups=C))
    x2, w2 = rand(2, C, 5, 6), rand(C, 1, 3, 3)
    for x in (x2, x2.to(memory_format=torch.channels_last)):
        torch.testing.assert_close(depthwise_conv2d(x, w2, bias, padding=1, impl="fused"),
                                   F.conv2d(x, w2, bias, padding=1, groups=C))


@pytest.mark.parametrize("make_bias", odd_biases())
def test_block_and_decode_odd_bias(make_bias):
    bias, w = make_bias(), rand(C, 1, 3)
    bcx, state = rand(2, 5, 3 * C), rand(2, C, 2)
    ref_state = state.clone()
    torch.testing.assert_close(short_conv_block(bcx, w, bias, conv_state=state, impl="fused"),
                               short_conv_block_reference(bcx, w, bias, conv_state=ref_state))
    torch.testing.assert_close(state, ref_state)
    x_new = rand(2, C)
    torch.testing.assert_close(conv1d_decode_step(x_new, state, w, bias, impl="fused"),
                               conv1d_decode_step_reference(x_new, ref_state, w, bias))


def grads_of(fn, *inputs):
    """Output and gradients of sum(fn(*inputs) * probe) for a fixed random probe."""
    out = fn(*inputs)
    probe = torch.randn(out.shape, dtype=out.dtype, device=out.device, generator=torch.Generator(DEV).manual_seed(0))
    return (out, *torch.autograd.grad((out * probe).sum(), inputs))


def fresh_leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("op", [
    pytest.param("conv1d", id="conv1d"), pytest.param("conv2d", id="conv2d"),
])
def test_conv_gradients_equal_native(op):
    if op == "conv1d":
        x, w, b = rand(3, C, 13), rand(2 * C, 1, 4), rand(2 * C)          # channel multiplier 2
        kw = dict(stride=2, padding=(2, 1), dilation=2)
        fused_op = lambda x, w, b: depthwise_conv1d(x, w, b, **kw, impl="fused")
        native = lambda x, w, b: F.conv1d(F.pad(x, kw["padding"]), w, b, stride=2, dilation=2, groups=C)
    else:
        x, w, b = rand(2, C, 6, 7), rand(C, 1, 3, 2), rand(C)
        fused_op = lambda x, w, b: depthwise_conv2d(x, w, b, stride=(1, 2), padding=1, impl="fused")
        native = lambda x, w, b: F.conv2d(x, w, b, stride=(1, 2), padding=1, groups=C)
    got = grads_of(fused_op, *fresh_leaves(x, w, b))
    want = grads_of(native, *fresh_leaves(x, w, b))
    assert got[0].grad_fn is not None
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


def test_block_and_decode_gradients_equal_reference():
    w, b, bcx, state = rand(C, 1, 3), rand(C), rand(2, 5, 3 * C), rand(2, C, 2)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], device=DEV)
    block = lambda impl: (lambda bcx, w, b: short_conv_block(bcx, w, b, conv_state=state.clone(), mask=mask,
                                                             impl=impl))
    reference = lambda bcx, w, b: short_conv_block_reference(bcx, w, b, conv_state=state.clone(), mask=mask)
    for g, r in zip(grads_of(block("fused"), *fresh_leaves(bcx, w, b)),
                    grads_of(reference, *fresh_leaves(bcx, w, b))):
        torch.testing.assert_close(g, r)
    x_new = rand(2, C)
    step = lambda x, w, b: conv1d_decode_step(x, state.clone(), w, b, activation="silu", impl="fused")
    step_ref = lambda x, w, b: conv1d_decode_step_reference(x, state.clone(), w, b, activation="silu")
    for g, r in zip(grads_of(step, *fresh_leaves(x_new, w, b)), grads_of(step_ref, *fresh_leaves(x_new, w, b))):
        torch.testing.assert_close(g, r)


def test_state_updated_once_under_autograd():
    """The kernel updates the conv state; backward's recompute must not shift it again."""
    w, bcx, state = rand(C, 1, 3, requires_grad=True), rand(2, 4, 3 * C), rand(2, C, 2)
    ref_state = state.clone()
    out = short_conv_block(bcx, w, conv_state=state, impl="fused")
    out.sum().backward()
    short_conv_block_reference(bcx, w.detach(), conv_state=ref_state)
    torch.testing.assert_close(state, ref_state)


def test_state_that_is_a_leaf_requiring_grad_raises_like_the_reference():
    """A conv_state requiring grad is differentiated (test_short_conv_state_grad.py), but one that
    is a leaf cannot be updated in place under autograd: fused raises PyTorch's in-place error
    as the reference's copy_ does, and leaves the state as it was (the kernel wrote a copy)."""
    w, bcx = rand(C, 1, 3, requires_grad=True), rand(2, 4, 3 * C)
    for op in (short_conv_block, short_conv_block_reference):
        state = rand(2, C, 2, requires_grad=True)
        before = state.detach().clone()
        kw = dict(impl="fused") if op is short_conv_block else {}
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            op(bcx, w, conv_state=state, **kw)
        assert torch.equal(state.detach(), before)


def test_no_autograd_node_without_grad():
    """Inference (the served path, CUDA graphs) never goes through the autograd Function."""
    x, w = rand(2, C, 9), rand(C, 1, 3, requires_grad=True)
    with torch.no_grad():
        assert depthwise_conv1d(x, w, padding=1, impl="fused").grad_fn is None
    assert depthwise_conv1d(x, w.detach(), padding=1, impl="fused").grad_fn is None
