"""LFM2 building blocks, matching transformers' modeling_lfm2.py (and modeling_lfm3.py) module for module.

Parameter names are the Hugging Face checkpoint names (`conv.in_proj`, `conv.conv`,
`self_attn.q_layernorm`, `feed_forward.w1`, `operator_norm`, ...), so a checkpoint loads by
name. The gated short conv goes through `models.depthwise.short_conv_block`, so the depthwise
implementation is chosen per call (`use_impl`); `short_conv_reference` beside it is the plain
torch definition the tests compare it with.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.depthwise import short_conv_block

from .config import LFM2Config


@dataclass
class StepContext:
    """What every layer of one forward shares (built once per forward by the model)."""
    rope: dict                        # attention layer type -> (cos, sin), each (B, L, head_dim):
                                      # RoPE at each token's position
    attn_masks: dict                  # attention layer type -> (B, 1, L, S) bool, True = may
                                      # attend; S = cached + L (max_length in a static step)
    token_mask: torch.Tensor | None   # (B, L) bool, False = left padding; None = no padding
    cache: object | None              # LFM2Cache or None
    start: int | torch.Tensor         # cache slot of the first new token (0 without a cache);
                                      # in a static decode step the (1,) device slot index


class RMSNorm(nn.Module):
    """weight * x / rms(x), the normalisation in float32 (as Lfm2RMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE; cos/sin for arbitrary per-row positions (left padding shifts rows).

    The first `rotary_dims` of head_dim rotate at theta^(-2i/head_dim); the rest get angle 0
    (cos 1, sin 0: passed through). rotary_dims == head_dim is the default RoPE;
    fewer is transformers' "proportional" RoPE (LFM3's full-attention layers). cos/sin come
    out in the model dtype (LFM2, as Lfm2RotaryEmbedding) or, with float32=True, in float32
    (LFM3 rotates in float32)."""

    def __init__(self, head_dim: int, theta: float, rotary_dims: int | None = None,
                 float32: bool = False):
        super().__init__()
        self.dim, self.theta, self.float32 = head_dim, theta, float32
        self.rotary_dims = head_dim if rotary_dims is None else rotary_dims
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        inv = 1.0 / (self.theta ** (torch.arange(0, self.dim, 2, dtype=torch.float) / self.dim))
        inv[self.rotary_dims // 2:] = 0.0                                # (head_dim / 2,)
        return inv

    def reset_buffers(self):
        """Recompute inv_freq (after building on the meta device and `to_empty`)."""
        self.inv_freq = self._inv_freq().to(self.inv_freq.device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        # positions (B, L) int64 -> cos, sin (B, L, head_dim); the angle in float32.
        freqs = positions[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        out = torch.float32 if self.float32 else dtype
        return emb.cos().to(out), emb.sin().to(out)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, H, L, D); cos/sin (B, L, D) broadcast over heads; computed in cos's dtype.
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class Attention(nn.Module):
    """GQA with per-head q/k RMSNorm and RoPE; keys/values go through the cache when given.

    `layer_type` picks the layer's RoPE and mask from the StepContext (full or sliding-window
    attention). LFM3 adds a sigmoid gate per head on the output (`gate_proj`) and optional
    projection biases; its checkpoints name out_proj/q_layernorm/k_layernorm o_proj/q_norm/
    k_norm (loading.py maps the names)."""

    def __init__(self, config: LFM2Config, layer_idx: int):
        super().__init__()
        c, d, bias = config.hidden_size, config.head_dim, config.attention_bias
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.layer_idx, self.head_dim = layer_idx, d
        self.layer_type = config.layer_types[layer_idx]
        self.n_rep = heads // kv_heads
        self.q_proj = nn.Linear(c, heads * d, bias=bias)
        self.k_proj = nn.Linear(c, kv_heads * d, bias=bias)
        self.v_proj = nn.Linear(c, kv_heads * d, bias=bias)
        self.out_proj = nn.Linear(heads * d, c, bias=bias)
        self.q_layernorm = RMSNorm(d, config.norm_eps)
        self.k_layernorm = RMSNorm(d, config.norm_eps)
        self.gate_proj = nn.Linear(c, heads, bias=False) if config.use_attention_gate else None

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        b, L, _ = h.shape
        heads = (b, L, -1, self.head_dim)
        q = self.q_layernorm(self.q_proj(h).view(heads)).transpose(1, 2)  # (B, H, L, D)
        k = self.k_layernorm(self.k_proj(h).view(heads)).transpose(1, 2)  # (B, Hkv, L, D)
        v = self.v_proj(h).view(heads).transpose(1, 2)                    # (B, Hkv, L, D)
        cos, sin = ctx.rope[self.layer_type]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if ctx.cache is not None:
            k, v = ctx.cache.write_kv(self.layer_idx, k, v, ctx.start)   # (B, Hkv, S, D)
        if self.n_rep > 1:  # repeat_interleave over heads (enable_gqa needs torch >= 2.5)
            k = k.repeat_interleave(self.n_rep, dim=1)
            v = v.repeat_interleave(self.n_rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.attn_masks[self.layer_type])
        out = out.transpose(1, 2)                                         # (B, L, H, D)
        if self.gate_proj is not None:
            out = out * torch.sigmoid(self.gate_proj(h))[..., None]       # (B, L, H, 1) per head
        return self.out_proj(out.reshape(b, L, -1))


def short_conv_reference(bcx, weight, bias=None, conv_state=None, mask=None):
    """Plain-torch definition of the gated short conv (what short_conv_block must equal).

    bcx (B, L, 3C) chunks [b | c | x]; weight (C, 1, K); conv_state (B, C, K-1) or None,
    updated in place; mask (B, L), 0 = padding (its b*x counts as 0). Returns (B, L, C).
    """
    bg, cg, x = bcx.transpose(1, 2).chunk(3, dim=1)          # each (B, C, L)
    bx = bg * x
    if mask is not None:
        bx = bx * mask[:, None, :].to(bx.dtype)
    k = weight.shape[-1]
    prev = conv_state if conv_state is not None else bx.new_zeros(bx.shape[0], bx.shape[1], k - 1)
    ext = torch.cat([prev.to(bx.dtype), bx], dim=-1)          # (B, C, K-1+L)
    if conv_state is not None and k > 1:
        conv_state.copy_(ext[:, :, ext.shape[-1] - (k - 1):])
    y = F.conv1d(ext, weight, bias, groups=weight.shape[0])   # (B, C, L)
    return (cg * y).transpose(1, 2).contiguous()


class ShortConv(nn.Module):
    """in_proj -> [b|c|x] -> c * causal_depthwise_conv(b * x) -> out_proj (Lfm2ShortConv)."""

    def __init__(self, config: LFM2Config, layer_idx: int):
        super().__init__()
        c, k = config.hidden_size, config.conv_L_cache
        self.layer_idx = layer_idx
        self.in_proj = nn.Linear(c, 3 * c, bias=config.conv_bias)
        # Holds the (C, 1, K) depthwise weight under the checkpoint's name `conv.conv.weight`;
        # its own forward is never called: short_conv_block does the conv.
        self.conv = nn.Conv1d(c, c, k, groups=c, padding=k - 1, bias=config.conv_bias)
        self.out_proj = nn.Linear(c, c, bias=config.conv_bias)

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        bcx = self.in_proj(h)                                          # (B, L, 3C)
        state = ctx.cache.conv_states[self.layer_idx] if ctx.cache is not None else None
        if getattr(ctx.cache, "conv_taps", None):   # prefix caching wants earlier states (LFM2Cache)
            ctx.cache.tap_conv(self.layer_idx, bcx, ctx.token_mask)
        y = short_conv_block(bcx, self.conv.weight, self.conv.bias,
                             conv_state=state, mask=ctx.token_mask)   # (B, L, C)
        return self.out_proj(y)


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), width config.ffn_dim."""

    def __init__(self, config: LFM2Config):
        super().__init__()
        c, f = config.hidden_size, config.ffn_dim
        self.w1 = nn.Linear(c, f, bias=False)
        self.w3 = nn.Linear(c, f, bias=False)
        self.w2 = nn.Linear(f, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Experts(nn.Module):
    """num_experts SwiGLUs stored stacked, as transformers holds them in memory (loading.py
    stacks a checkpoint's per-expert w1/w3/w2): gate_up_proj (E, 2I, H) = [w1; w3] per expert,
    down_proj (E, H, I) = w2."""

    def __init__(self, num_experts: int, hidden: int, width: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * width, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, width))

    def one(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert e on its tokens x (N, H) -> (N, H)."""
        gate, up = F.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[e])

    def every(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every token: x (T, H) -> (E, T, H), three batched matmuls."""
        gate, up = torch.matmul(x, self.gate_up_proj.transpose(1, 2)).chunk(2, dim=-1)   # (E, T, I) each
        return torch.matmul(F.silu(gate) * up, self.down_proj.transpose(1, 2))


class MoE(nn.Module):
    """LFM2-MoE's sparse feed-forward (Lfm2MoeSparseMoeBlock). A sigmoid router scores every
    expert per token; the num_experts_per_tok best by score (+ expert_bias, which steers the
    pick but not the weight) run, weighted by their scores (renormalised to sum 1 when
    norm_topk_prob, times routed_scaling_factor).

    Eagerly only the experts some token picked run, each on its tokens (which ones is read on
    the host). While a CUDA graph is being captured no host read is possible, so every expert
    runs on every token and the unpicked ones are weighted 0: the same sum, in three batched
    matmuls whose cost at decode batch sizes is reading the experts' weights once."""

    def __init__(self, config: LFM2Config):
        super().__init__()
        c, e = config.hidden_size, config.num_experts
        self.top_k, self.norm_topk_prob = config.num_experts_per_tok, config.norm_topk_prob
        self.scale = config.routed_scaling_factor
        self.gate = nn.Linear(c, e, bias=False)
        self.experts = Experts(e, c, config.moe_intermediate_size)
        # A checkpoint tensor (a buffer in transformers), never trained here: a frozen parameter
        # so loading fills it by name like the rest.
        self.expert_bias = nn.Parameter(torch.zeros(e), requires_grad=False) if config.use_expert_bias else None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, H) -> (weights (T, k), expert ids (T, k)), as Lfm2MoeTopKRouter."""
        logits = F.linear(x, self.gate.weight)                               # (T, E)
        scores = logits.sigmoid()
        if self.expert_bias is not None:
            _, picked = torch.topk(scores + self.expert_bias, self.top_k, dim=-1)
            weights = scores.gather(1, picked).type_as(logits)
        else:
            weights, picked = torch.topk(scores, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
        return weights * self.scale, picked

    def forward(self, x: torch.Tensor, dense: bool | None = None) -> torch.Tensor:
        """x (B, L, H) -> (B, L, H). dense None: only while capturing a CUDA graph."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])                                          # (T, H)
        weights, picked = self.route(x)
        if dense is None:
            dense = x.is_cuda and torch.cuda.is_current_stream_capturing()
        if dense:
            per_expert = torch.zeros(x.shape[0], self.experts.gate_up_proj.shape[0], dtype=weights.dtype,
                                     device=x.device).scatter_(1, picked, weights)   # (T, E), 0 = not picked
            y = self.experts.every(x)                                         # (E, T, H)
            out = (y * per_expert.t()[:, :, None].to(y.dtype)).sum(0)
        else:
            out = torch.zeros_like(x)
            for e in picked.unique().tolist():                                # host read: the experts in use
                tok, slot = (picked == e).nonzero(as_tuple=True)
                y = self.experts.one(x[tok], e) * weights[tok, slot, None]
                out.index_add_(0, tok, y.to(out.dtype))
        return out.view(shape)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: operator (conv or attention), then SwiGLU; with
    use_sandwich_norm (LFM3) each output is RMS-normalised before it joins the residual."""

    def __init__(self, config: LFM2Config, layer_idx: int):
        super().__init__()
        self.is_attention_layer = config.layer_types[layer_idx] != "conv"
        if self.is_attention_layer:
            self.self_attn = Attention(config, layer_idx)
        else:
            self.conv = ShortConv(config, layer_idx)
        moe = config.num_experts > 0 and layer_idx >= config.num_dense_layers
        self.feed_forward = MoE(config) if moe else MLP(config)
        c, eps = config.hidden_size, config.norm_eps
        self.operator_norm = RMSNorm(c, eps)
        self.ffn_norm = RMSNorm(c, eps)
        sandwich = config.use_sandwich_norm
        self.post_operator_norm = RMSNorm(c, eps) if sandwich else nn.Identity()
        self.post_ffn_norm = RMSNorm(c, eps) if sandwich else nn.Identity()

    def forward(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        op = self.self_attn if self.is_attention_layer else self.conv
        h = h + self.post_operator_norm(op(self.operator_norm(h), ctx))
        return h + self.post_ffn_norm(self.feed_forward(self.ffn_norm(h)))
