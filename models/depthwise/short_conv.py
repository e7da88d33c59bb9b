"""LFM2's gated short-conv block and the causal-conv decode step, for every impl.

    short_conv_block(bcx, weight, bias=None, *, conv_state=None, mask=None, impl=None) -> y (B, L, C)
    conv1d_decode_step(x_new, conv_state, weight, bias=None, *, activation=None, impl=None) -> (B, C)

`fused` runs each as one Triton launch (triton_short_conv.py, triton_decode.py). Every
other impl composes the same math around `depthwise_conv1d(..., impl=impl)`, so e.g.
`per_group` shows its O(C) launches at decode time too. The `*_reference` functions are
the plain-torch definitions that the tests hold every impl to.

Semantics (docs/ARCHITECTURE.md "Short-conv block"): bcx chunks [b | c | x] along the last
dim; bx = b * x, zeroed where mask == 0; bx_ext = cat(conv_state or zeros, bx) along time;
y[t] = c[t] * (bias + sum_k w[k] * bx_ext[t + k]); conv_state <- the last K-1 of bx_ext.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import profiling
from . import dispatch, fused, weight_layout

ACTIVATIONS = (None, "silu")
# The slice_sum block's one-token path (below); False runs one-token steps through the K-tap
# loop as prefill does. Process-wide: for benchmarks/block_decode.py, which times both.
ONE_TOKEN_WINDOW = True


# ---------------------------------------------------------------- validation

def _check_weight(weight, bias, C, ref, what):
    if weight.dim() != 3 or weight.shape[0] != C or weight.shape[1] != 1 or weight.shape[2] < 1:
        raise ValueError(f"weight must be (C, 1, K) = ({C}, 1, K) with K >= 1 to match {what}, "
                         f"got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"bias must be (C,) = ({C},) or None, got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.device != ref.device or t.dtype != ref.dtype):
            raise ValueError(f"{name} must be on {ref.device} with dtype {ref.dtype} like {what}, "
                             f"got {t.device}/{t.dtype}")


def _check_state(conv_state, B, C, K, ref):
    want = (B, C, K - 1)
    if tuple(conv_state.shape) != want:
        raise ValueError(f"conv_state must be (B, C, K-1) = {want}, got {tuple(conv_state.shape)}")
    if conv_state.device != ref.device or not conv_state.is_floating_point():
        raise ValueError(f"conv_state must be a floating tensor on {ref.device}, "
                         f"got {conv_state.dtype} on {conv_state.device}")


def _check_block(bcx, weight, bias, conv_state, mask):
    if bcx.dim() != 3 or bcx.shape[-1] % 3 != 0 or not bcx.is_floating_point():
        raise ValueError(f"bcx must be a floating (B, L, 3*C) tensor (chunks [b | c | x]), "
                         f"got {bcx.dtype} {tuple(bcx.shape)}")
    B, L, C3 = bcx.shape
    _check_weight(weight, bias, C3 // 3, bcx, "bcx (B, L, 3*C)")
    if conv_state is not None:
        _check_state(conv_state, B, C3 // 3, weight.shape[-1], bcx)
    if mask is not None and (tuple(mask.shape) != (B, L) or mask.device != bcx.device):
        raise ValueError(f"mask must be (B, L) = {(B, L)} on {bcx.device} (0 = padding), "
                         f"got {tuple(mask.shape)} on {mask.device}")


def _check_decode(x_new, conv_state, weight, bias, activation):
    if x_new.dim() != 2 or not x_new.is_floating_point():
        raise ValueError(f"x_new must be a floating (B, C) tensor, got {x_new.dtype} {tuple(x_new.shape)}")
    B, C = x_new.shape
    _check_weight(weight, bias, C, x_new, "x_new (B, C)")
    _check_state(conv_state, B, C, weight.shape[-1], x_new)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


# ---------------------------------------------------------------- plain-torch definitions

def _gated_input(bcx, mask):
    """bcx (B, L, 3C) -> c gate and b*x (masked), each (B, C, L) views/tensors."""
    b, c, x = bcx.transpose(1, 2).chunk(3, dim=1)             # each (B, C, L)
    bx = b * x
    if mask is not None:                                      # where, not *: NaN-safe on padding
        bx = torch.where(mask[:, None, :] != 0, bx, bx.new_zeros(()))
    return c, bx


def _compose_block(bcx, weight, conv_state, mask, conv):
    """The block around `conv(x (B, C, T), left_pad) -> (B, C, T + left_pad - K + 1)`."""
    c, bx = _gated_input(bcx, mask)
    K, L = weight.shape[-1], bx.shape[-1]
    if L == 0:   # an empty chunk: no output, state unchanged (the conv below would refuse L_out 0)
        return bcx.new_empty(bcx.shape[0], 0, bcx.shape[-1] // 3)
    if conv_state is None:
        y = conv(bx, K - 1)                                   # causal: zero left context
    else:
        state = conv_state if conv_state.dtype == bx.dtype else conv_state.to(bx.dtype)
        ext = torch.cat([state, bx], dim=-1)                     # (B, C, K-1+L)
        if K > 1:
            conv_state.copy_(ext[:, :, L:])                   # last K-1 of bx_ext
        y = conv(ext, 0)
    return (c * y).transpose(1, 2).contiguous()               # (B, L, C)


def _block_taps(weight: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """weight (C, 1, K) -> (K, C) contiguous in the accumulation dtype, made once per weight
    (weight_layout.cached_on): one tap's channels are then a contiguous row to broadcast.
    Under autograd it is made from the weight itself on every call, so gradients reach it
    (a forward-mode tangent likewise: cached_on checks that itself)."""
    def make(w):
        return w[:, 0, :].t().to(acc).contiguous()
    if weight.requires_grad and torch.is_grad_enabled():
        return make(weight)
    return weight_layout.cached_on(weight, f"_dwserve_block_taps_{str(acc)[6:]}", make)


def _slice_sum_block(bcx, weight, bias, conv_state, mask):
    """slice_sum in the (B, L, C) layout bcx arrives in: the same K slices x per-channel
    scalars, summed, but along dim 1 with channels innermost, so there is no transpose to
    (B, C, L) and back (two full copies the composed path pays) and every multiply-add runs
    over contiguous channel rows. fp16/bf16 accumulate in fp32 like slice_sum.py.
    A one-token step (decoding) is one multiply and one sum over the (B, K, C) window instead
    of K multiply-adds: at decode sizes each op's fixed cost is most of the time, and inside a
    model several times its warm cost (benchmarks/results/block-decode-cpu.md)."""
    K = weight.shape[-1]
    b, c, x = bcx.chunk(3, dim=-1)                            # each (B, L, C)
    bx = b * x
    if mask is not None:                                      # where, not *: NaN-safe on padding
        bx = torch.where(mask[:, :, None] != 0, bx, bx.new_zeros(()))
    L = bx.shape[1]
    if conv_state is None:
        ext = F.pad(bx, (0, 0, K - 1, 0))                     # (B, K-1+L, C): zero left context
    else:
        state = conv_state.transpose(1, 2)                    # (B, K-1, C) view
        ext = torch.cat([state if state.dtype == bx.dtype else state.to(bx.dtype), bx], dim=1)
        if K > 1:
            conv_state.copy_(ext[:, L:, :].transpose(1, 2))   # last K-1 of bx_ext
    acc = torch.float32 if bx.dtype in (torch.float16, torch.bfloat16) else bx.dtype
    taps = _block_taps(weight, acc)                           # (K, C)
    if L == 1 and ONE_TOKEN_WINDOW:                           # ext is the (B, K, C) window
        y = (ext * taps).sum(1, keepdim=True)                 # (B, 1, C), in acc
        if bias is not None:
            y.add_(bias)
    else:
        y = ext[:, :L] * taps[0] if bias is None else torch.addcmul(bias.to(acc), ext[:, :L], taps[0])
        for k in range(1, K):
            y.addcmul_(ext[:, k:k + L], taps[k])              # (B, L, C) += slice * w[:, k]
    y.mul_(c)
    return y if y.dtype == bcx.dtype else y.to(bcx.dtype)


def short_conv_block_reference(bcx, weight, bias=None, *, conv_state=None, mask=None):
    """Plain-torch gated short conv (F.conv1d with groups=C); same contract as short_conv_block."""
    _check_block(bcx, weight, bias, conv_state, mask)
    conv = lambda x, left: F.conv1d(F.pad(x, (left, 0)), weight, bias, groups=weight.shape[0])
    return _compose_block(bcx, weight, conv_state, mask, conv)


def conv1d_decode_step_reference(x_new, conv_state, weight, bias=None, *, activation=None):
    """Plain-torch decode step: window = cat(state, x_new); out = act(w . window + bias)."""
    _check_decode(x_new, conv_state, weight, bias, activation)
    window = torch.cat([conv_state.to(x_new.dtype), x_new[:, :, None]], dim=-1)   # (B, C, K)
    out = (window * weight[:, 0, :]).sum(-1)                  # (B, C)
    if bias is not None:
        out = out + bias
    conv_state.copy_(window[:, :, 1:])
    return F.silu(out) if activation == "silu" else out


# ---------------------------------------------------------------- public ops

def _auto_impl(key: tuple, op: str, view, weight: torch.Tensor) -> str:
    """auto's answer for a block or decode-step call, cached in dispatch's auto cache under
    `key` (the call's own shapes), so a decode step neither rebuilds the view auto's rule reads
    (`view()`, ATen ops too) nor its dispatch key every call: measured inside a model, right
    after a projection's matmul, that cost as much as the one-token block itself."""
    name = dispatch._AUTO.get(key)
    if name is None:
        K = weight.shape[-1]
        name = dispatch._AUTO[key] = dispatch.resolve_impl(op, view(), weight, 1, (K - 1, 0), 1, "auto")
    return name


def short_conv_block(bcx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                     conv_state: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                     impl: str | None = None) -> torch.Tensor:
    """y (B, L, C) = c * causal_depthwise_conv(b * x) from bcx (B, L, 3C) = [b | c | x].

    weight (C, 1, K), bias (C,) or None; conv_state (B, C, K-1) or None, the b*x values
    before position 0, updated in place to the last K-1 values of cat(conv_state, b*x);
    mask (B, L) or None (0 = padding: that position's b*x counts as 0). impl: one of IMPLS,
    "auto" or None (the current `use_impl`). Raises ValueError on shape mismatches.
    """
    # F.conv's autocast policy, as depthwise_conv1d's; while dynamo traces, _autocast's own check
    if torch.compiler.is_compiling() or torch._C._is_any_autocast_enabled():
        bcx, weight, bias = dispatch._autocast(bcx, weight, bias)   # (conv_state keeps its dtype)
    _check_block(bcx, weight, bias, conv_state, mask)
    K = weight.shape[-1]
    policy = impl if impl is not None else dispatch.current_impl()
    if policy == "auto":           # the conv sees the (B, C, L) x chunk
        name = _auto_impl(("short_conv_block", bcx.shape, bcx.dtype, bcx.device.type, weight.shape),
                          "conv1d", lambda: bcx[..., 2 * (bcx.shape[-1] // 3):].transpose(1, 2), weight)
    else:
        name = dispatch.resolve_impl("conv1d", bcx, weight, 1, (K - 1, 0), 1, policy)
    if name in dispatch.NO_TRANSFORM and dispatch._functorch_level() is not None:   # torch.func wrappers
        name = dispatch.under_transform(policy, name)
    # One record around the whole op: the depthwise_conv1d inside does not count again.
    with profiling.record_depthwise(bcx.device):
        if name == "fused":
            return fused.short_conv_block(bcx, weight, bias, conv_state, mask)
        if name == "slice_sum":
            return _slice_sum_block(bcx, weight, bias, conv_state, mask)
        conv = lambda x, left: dispatch.depthwise_conv1d(x, weight, bias, padding="causal" if left else 0,
                                                         impl=name)
        return _compose_block(bcx, weight, conv_state, mask, conv)


def conv1d_decode_step(x_new: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None = None, *, activation: str | None = None,
                       impl: str | None = None) -> torch.Tensor:
    """One new column of a causal depthwise conv1d: x_new (B, C) -> out (B, C).

    conv_state (B, C, K-1) holds the previous K-1 inputs and is shifted in place (oldest out,
    x_new in). weight (C, 1, K), bias (C,) or None, activation None or "silu". impl as for
    short_conv_block, resolved with op "decode".
    """
    if torch.compiler.is_compiling() or torch._C._is_any_autocast_enabled():
        x_new, weight, bias = dispatch._autocast(x_new, weight, bias)
    _check_decode(x_new, conv_state, weight, bias, activation)
    K = weight.shape[-1]
    policy = impl if impl is not None else dispatch.current_impl()
    if policy == "auto":           # auto's rule reads the (B, C, 1) view
        name = _auto_impl(("decode_step", x_new.shape, x_new.dtype, x_new.device, weight.shape),
                          "decode", lambda: x_new[:, :, None], weight)
    else:
        name = dispatch.resolve_impl("decode", x_new, weight, 1, (K - 1, 0), 1, policy)
    if name in dispatch.NO_TRANSFORM and dispatch._functorch_level() is not None:   # torch.func wrappers
        name = dispatch.under_transform(policy, name)
    with profiling.record_depthwise(x_new.device):
        if name == "fused":
            return fused.conv1d_decode_step(x_new, conv_state, weight, bias, activation)
        window = torch.cat([conv_state.to(x_new.dtype), x_new[:, :, None]], dim=-1)   # (B, C, K)
        out = dispatch.depthwise_conv1d(window, weight, bias, impl=name)[:, :, 0]      # (B, C)
        conv_state.copy_(window[:, :, 1:])
        return F.silu(out) if activation == "silu" else out
