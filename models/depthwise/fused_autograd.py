"""Gradients for the `fused` impl: the Triton kernels compute forwards only, so when autograd
needs a gradient the call goes through `FusedKernel`, whose backward recomputes the op
in plain torch (the impl's reference) and differentiates that, as activation checkpointing
does. The forward result is still the kernel's; only training pays the recompute. Under
backward(create_graph=True) the recompute keeps its graph, so second-order gradients are the
reference's.

Forward-mode AD (torch.autograd.forward_ad) goes through the same Function: its `jvp` is the
reference's Jacobian-vector product, so a dual input's tangent reaches the output.

The stateful ops (decode step, short-conv block) overwrite a conv_state in place. `with_state`
makes that state an input (its old value) and an output (its new value) of the Function, so
gradients and tangents flow into the old state and out of the new one, as they do through
the plain-torch ops' copy_.

Without this, a fused output under autograd would carry no grad_fn: backward() would run,
silently skip the depthwise layer's weight and give the layers below it wrong gradients (and
a dual input's tangent would be dropped: a silently zero JVP).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD

from .weight_layout import has_tangent


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd is recording and any of `tensors` requires a gradient, or any
    carries a forward-mode tangent."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return True
    # the level first: outside a dual level (every served call) one global read, no generator
    return fwAD._current_level >= 0 and any(has_tangent(t) for t in tensors)


class FusedKernel(torch.autograd.Function):
    """apply(kernel, reference, *inputs): forward = kernel(*inputs), backward = the vector-Jacobian
    product of reference(*inputs). `inputs` are the differentiable tensors (None allowed, e.g.
    no bias); anything else the op needs (strides, masks) is closed over by the two callables.
    Both return one tensor or the same tuple of tensors (with_state: (out, new_state)); neither
    may write to an input (they are saved for backward)."""

    @staticmethod
    def forward(ctx, kernel: Callable, reference: Callable, *inputs):
        ctx.reference = reference
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)
        return kernel(*inputs)

    @staticmethod
    def jvp(ctx, _kernel_t, _reference_t, *tangents):
        """Forward mode: the reference's JVP at the saved inputs (autograd.functional.jvp, by
        the double-vjp trick, so no nested dual level is needed); a None tangent counts as 0."""
        inputs = ctx.saved_tensors
        live = [i for i, t in enumerate(inputs) if t is not None]

        def ref(*xs):
            args = list(inputs)
            for i, x in zip(live, xs):
                args[i] = x
            return ctx.reference(*args)

        primals = tuple(inputs[i].detach() for i in live)
        tans = tuple(torch.zeros_like(p) if tangents[i] is None else tangents[i] for i, p in zip(live, primals))
        with torch.enable_grad():
            _, out_t = torch.autograd.functional.jvp(ref, primals, tans)
        return out_t

    @staticmethod
    def backward(ctx, *grad_outs):
        inputs = ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:]
        # Autograd runs this under grad mode only for backward(create_graph=True) (a gradient
        # penalty, a Hessian-vector product): then the reference is recomputed on the inputs
        # themselves, so the gradients returned carry their graph (to x, weight, bias and
        # grad_out) and differentiate again exactly. once_differentiable could not: with a
        # grad_out that needs no grad (loss = out.sum()) it returns gradients with no graph, and
        # a penalty on them silently adds nothing to w.grad.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if create_graph:
                leaves = list(inputs)
            else:                                          # first order: a detached recompute
                leaves = [None if t is None else t.detach().requires_grad_(want)
                          for t, want in zip(inputs, wanted)]
            out = ctx.reference(*leaves)
            outs = out if isinstance(out, tuple) else (out,)
            # An output that depends on no input wanted here (the new state when only the
            # weight is) has no graph: leave it out. A wanted input no output reads (an empty
            # K-1 == 0 state) gets None, which autograd takes as the zero it is.
            used = [(o, g) for o, g in zip(outs, grad_outs) if o.requires_grad]
            wrt = [t for t, want in zip(leaves, wanted) if want]
            grads = iter(torch.autograd.grad([o for o, _ in used], wrt, [g for _, g in used],
                                             create_graph=create_graph, allow_unused=True)
                         if used else [None] * len(wrt))
        return (None, None, *(next(grads) if want else None for want in wanted))


def _on_a_copy(op: Callable) -> Callable:
    """op(state, *inputs) -> out, writing `state` in place, as a function of the old state that
    writes nothing: (before, *inputs) -> (out, new_state (B, C, K-1), a fresh tensor)."""
    def call(before, *inputs):
        state = before.clone()
        return op(state, *inputs), state
    return call


def with_state(kernel: Callable, reference: Callable, conv_state: torch.Tensor, *inputs) -> torch.Tensor:
    """out = kernel(conv_state, *inputs) with conv_state (B, C, K-1) updated in place, differentiable
    in the old state and through the new one like reference(conv_state, *inputs) (same contract,
    plain torch). The old value goes into the Function as a clone taken here, under autograd, so
    it carries conv_state's history (a second-order recompute reaches it) and is never
    overwritten; the new value comes out of the Function and is copied into conv_state, which
    then carries the Function's history (copy_ on a leaf that requires grad raises, as the
    reference's own copy_ does)."""
    before = conv_state.clone()                     # (B, C, K-1): the state the kernel reads
    out, new = FusedKernel.apply(_on_a_copy(kernel), _on_a_copy(reference), before, *inputs)
    if conv_state.shape[-1]:                        # K == 1: no state to write (nor a reference copy_)
        conv_state.copy_(new)
    return out
