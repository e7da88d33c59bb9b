"""Gradients and tangents of the short-conv ops with respect to EVERY differentiable input,
conv_state included, and through the updated conv_state they leave behind.

short_conv_block / conv1d_decode_step read the incoming conv_state (the last K-1 inputs
before this call) and overwrite it in place with the new last K-1. Under autograd the
state's old value feeds y (and, when L < K-1, the new state), and the new state carries the
gradient of whatever reads it next (the next prefill chunk or decode step). The fused impl
used to drop both: a conv_state that required grad was refused when another input required
grad too, and when it alone did (or carried a forward-mode tangent) the kernel ran with no
autograd node at all: no grad_fn on y, a silently zero gradient/JVP for the state, and a new
state with no history (or its old tangent). Every impl is held here to a functional float64
definition (test_short_conv.ref_block for the block, ref_step below) on fresh random,
odd-sized inputs: a strided bcx and a conv_state that is a strided view into a bigger cache.
"""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import jvp, vjp as func_vjp

from fused_common import DEV, TOL, needs_fused
from models.depthwise import conv1d_decode_step, short_conv_block
from test_short_conv import ref_block

FUSED = pytest.param("fused", id="fused", marks=[pytest.mark.fused, needs_fused])
IMPLS = [pytest.param(i, id=i) for i in ("slice_sum", "per_group", "native")] + [FUSED]
FLOATS = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
#        B, L, C, K, masked, bias: L < K-1 makes the new state depend on the old one
BLOCKS = [pytest.param(2, 7, 5, 4, True, True, id="prefill_mask"),
          pytest.param(3, 2, 3, 5, False, True, id="L_lt_K-1"),
          pytest.param(1, 1, 7, 3, False, False, id="one_token_nobias"),
          pytest.param(2, 3, 4, 1, False, True, id="K1_empty_state")]     # no state to read or write
STEPS = [pytest.param(3, 5, 4, "silu", id="k4_silu"), pytest.param(2, 3, 2, None, id="k2_linear"),
         pytest.param(2, 3, 1, "silu", id="k1_empty_state")]


def ref_step(x, w, b, state, activation):
    """Functional float64 decode step -> (out (B, C), new_state (B, C, K-1))."""
    window = torch.cat([state.double(), x.double()[:, :, None]], dim=-1)        # (B, C, K)
    out = (window * w.double()[:, 0]).sum(-1) + (0 if b is None else b.double())
    return (F.silu(out) if activation == "silu" else out), window[:, :, 1:]


def leaves(shapes, dtype, seed):
    """Fresh random leaves; each test views bcx out of a wider tensor and the state out of a
    bigger cache, so neither is contiguous (as in LFM2: a slice of in_proj's output, a row
    of the cache)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g, dtype=torch.float64).to(DEV, dtype).requires_grad_()
            for k, s in shapes.items()}


def block_case(B, L, C, K, masked, bias, dtype, seed):
    """-> (leaves, op(impl) -> (y, new_state), reference() -> (y, new_state))."""
    t = leaves({"wide": (B, L, 3 * C + 3), "w": (C, 1, K), "b": (C,), "cache": (B, C, K + 1)}, dtype, seed)
    if not bias:
        del t["b"]
    mask = (torch.rand(B, L, generator=torch.Generator().manual_seed(seed)) > 0.3).to(DEV) if masked else None

    def op(impl):
        state = t["cache"].clone()[:, :, 1:K]           # (B, C, K-1) view: updated in place
        y = short_conv_block(t["wide"][:, :, 1:3 * C + 1], t["w"], t.get("b"), conv_state=state,
                             mask=mask, impl=impl)
        return y, state

    def reference():
        return ref_block(t["wide"][:, :, 1:3 * C + 1], t["w"], t.get("b"), t["cache"][:, :, 1:K], mask)
    return t, op, reference


def step_case(B, C, K, activation, dtype, seed):
    t = leaves({"x": (B, C + 2), "w": (C, 1, K), "b": (C,), "cache": (B, C, K + 1)}, dtype, seed)

    def op(impl):
        state = t["cache"].clone()[:, :, 1:K]           # (B, C, K-1) view: updated in place
        return conv1d_decode_step(t["x"][:, 1:C + 1], state, t["w"], t["b"], activation=activation,
                                  impl=impl), state

    def reference():
        return ref_step(t["x"][:, 1:C + 1], t["w"], t["b"], t["cache"][:, :, 1:K], activation)
    return t, op, reference


def vjp(outputs, inputs, seed):
    """Gradients of sum(y * gy) + sum(new_state * gs) for fixed random gy, gs; a gradient
    that does not reach an input is an error (allow_unused=False), not a zero."""
    g = torch.Generator().manual_seed(seed)
    probes = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(DEV, o.dtype) for o in outputs]
    return torch.autograd.grad(outputs, inputs, probes)


def check_grads(t, op, reference, impl, dtype, only=None):
    names = list(t) if only is None else only
    y, state = op(impl)
    y_ref, s_ref = reference()
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(state.double(), s_ref, atol=atol, rtol=rtol)
    assert y.grad_fn is not None and state.grad_fn is not None, "no autograd history: gradients dropped"
    got = vjp((y, state), [t[n] for n in names], seed=1)
    want = vjp((y_ref.to(dtype), s_ref.to(dtype)), [t[n] for n in names], seed=1)
    for n, g, r in zip(names, got, want):
        torch.testing.assert_close(g, r, atol=atol, rtol=rtol, msg=lambda m, n=n: f"grad of {n}: {m}")


# ------------------------------------------------------------------ backward
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("B,L,C,K,masked,bias", BLOCKS)
def test_block_gradients_every_input(impl, dtype, B, L, C, K, masked, bias):
    check_grads(*block_case(B, L, C, K, masked, bias, dtype, seed=L * 7 + K), impl, dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("B,C,K,activation", STEPS)
def test_decode_step_gradients_every_input(impl, dtype, B, C, K, activation):
    check_grads(*step_case(B, C, K, activation, dtype, seed=C * 5 + K), impl, dtype)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_when_only_the_state_requires_it(impl):
    """The fused op checked only bcx/x, weight and bias to decide whether autograd was needed:
    with only conv_state requiring grad it ran the bare kernel (y without grad_fn)."""
    for t, op, reference in (block_case(2, 3, 5, 4, True, True, torch.float64, seed=3),
                             step_case(2, 5, 3, "silu", torch.float64, seed=4)):
        for n, v in t.items():
            v.requires_grad_(n == "cache")
        check_grads(t, op, reference, impl, torch.float64, only=["cache"])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("split", [pytest.param(1, id="1+rest"), pytest.param(5, id="5+rest")])
def test_gradient_flows_through_the_carried_state(impl, split):
    """Chunked prefill then a decode step under autograd, the state a fresh cache that needs
    no grad (as LFM2's): the first chunk's inputs reach the later outputs only through the
    updated conv_state, so a new state without history drops their gradient silently."""
    B, L, C, K = 2, 8, 5, 4
    t = leaves({"bcx": (B, L + 1, 3 * C), "w": (C, 1, K), "b": (C,)}, torch.float64, seed=split)
    bcx, w, b = t["bcx"], t["w"], t["b"]
    state = torch.zeros(B, C, K - 1, dtype=torch.float64, device=DEV)
    parts = [short_conv_block(bcx[:, lo:hi], w, b, conv_state=state, impl=impl) for lo, hi in ((0, split), (split, L))]
    bb, cc, xx = bcx[:, L].chunk(3, dim=-1)                   # the last token as a decode step
    last = cc * conv1d_decode_step(bb * xx, state, w, b, impl=impl)
    y_ref, s_ref = ref_block(bcx, w, b, torch.zeros_like(state), None)
    got = vjp((torch.cat([*parts, last[:, None]], 1), state), list(t.values()), seed=2)
    want = vjp((y_ref, s_ref), list(t.values()), seed=2)
    for n, g, r in zip(t, got, want):
        torch.testing.assert_close(g, r, msg=lambda m, n=n: f"grad of {n}: {m}")


# ------------------------------------------------------------------ forward-mode AD
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("grad_mode", [pytest.param(True, id="grad"), pytest.param(False, id="no_grad")])
@pytest.mark.parametrize("only_state", [pytest.param(False, id="all_dual"), pytest.param(True, id="state_dual")])
def test_forward_ad_tangents_every_input(impl, grad_mode, only_state):
    """Dual inputs (all of them, or only the cache the state is viewed from): the tangents of
    y and of the updated state equal the reference's. The fused op dropped the state's tangent
    (and, with only the state dual, ran the bare kernel: y without a tangent, and the state
    kept its old tangent beside its new value)."""
    for t, op, reference in (block_case(2, 2, 5, 4, True, True, torch.float64, seed=8),
                             step_case(3, 5, 4, "silu", torch.float64, seed=9)):
        g = torch.Generator().manual_seed(10)
        with torch.set_grad_enabled(grad_mode), fwAD.dual_level():
            for n, v in t.items():
                v = v.detach()
                t[n] = fwAD.make_dual(v, torch.randn(v.shape, generator=g, dtype=v.dtype)) \
                    if n == "cache" or not only_state else v
            got = [fwAD.unpack_dual(o) for o in op(impl)]
            want = [fwAD.unpack_dual(o) for o in reference()]
            for name, a, r in zip(("y", "new state"), got, want):
                assert a.tangent is not None, f"the tangent of {name} was dropped"
                torch.testing.assert_close(a.primal, r.primal)
                torch.testing.assert_close(a.tangent, r.tangent, msg=lambda m, n=name: f"tangent of {n}: {m}")


@pytest.mark.parametrize("impl", [*IMPLS[:3], pytest.param("auto", id="auto")])
def test_torch_func_jvp_and_vjp_reach_the_state(impl):
    """torch.func.jvp / vjp over every input, the state included (auto never hands functorch
    wrappers to fused or compiled: dispatch.under_transform; an explicit fused raises, below)."""
    t, op, reference = block_case(2, 2, 5, 4, True, True, torch.float64, seed=13)
    names, primals = list(t), tuple(v.detach() for v in t.values())
    tangents = tuple(torch.randn_like(p) for p in primals)

    def call(fn):
        def f(*xs):
            t.update(zip(names, xs))
            return fn()
        return f
    torch.testing.assert_close(jvp(call(lambda: op(impl)), primals, tangents),
                               jvp(call(reference), primals, tangents))
    out, pull = func_vjp(call(lambda: op(impl)), *primals)
    _, pull_ref = func_vjp(call(reference), *primals)
    torch.testing.assert_close(pull(out), pull_ref(out))


@needs_fused
@pytest.mark.fused
def test_explicit_fused_under_torch_func_says_what_to_use():
    t, op, _ = step_case(2, 3, 3, None, torch.float64, seed=14)
    primals = tuple(v.detach() for v in t.values())

    def f(*xs):
        t.update(zip(list(t), xs))
        return op("fused")
    with pytest.raises(ValueError, match="torch.func.*impl='slice_sum' or 'native'"):
        jvp(f, primals, tuple(torch.zeros_like(p) for p in primals))


# ------------------------------------------------------------------ gradcheck, second order
@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_and_gradgradcheck(impl):
    """Finite differences of (y, new state) for every input, first order in both modes, and
    second order (a gradient penalty differentiates the recompute again, state included)."""
    for t, op, _ in (block_case(1, 2, 2, 3, True, True, torch.float64, seed=11),
                     step_case(2, 2, 3, "silu", torch.float64, seed=12)):
        names = list(t)

        def fn(*xs):      # clones: gradcheck perturbs through .data (no version bump), which a
            t.update((n, x.clone()) for n, x in zip(names, xs))   # cached weight layout would miss
            return op(impl)
        inputs = tuple(t.values())
        assert torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, fast_mode=impl == "fused")
        assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=impl == "fused")


@needs_fused
@pytest.mark.fused
def test_lfm2_chunked_forward_with_a_cache_has_slice_sums_gradients():
    """The model-level symptom: an LFM2 run in three chunks over one cache under autograd (a
    prefix-conditioned loss, truncated BPTT) gave fused every parameter's gradient wrong
    (embedding, in_proj, conv weight, ...: the earlier chunks' share through the conv state
    was missing), silently; it must equal slice_sum's."""
    from models.depthwise import use_impl
    from models.lfm2 import LFM2Config, LFM2ForCausalLM
    torch.manual_seed(0)
    model = LFM2ForCausalLM(LFM2Config(
        vocab_size=37, hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, block_multiple_of=8, layer_types=["conv", "full_attention"])).double()
    ids = torch.randint(3, 37, (2, 9), generator=torch.Generator().manual_seed(1))

    def grads(impl):
        model.zero_grad()
        with use_impl(impl):
            cache = model.new_cache(2, 9)
            logits = torch.cat([model(ids[:, lo:hi], cache=cache) for lo, hi in ((0, 5), (5, 8), (8, 9))], 1)
        logits.square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}
    want, got = grads("slice_sum"), grads("fused")
    for n in want:
        torch.testing.assert_close(got[n], want[n], msg=lambda m, n=n: f"grad of {n}: {m}")
