"""LFM2-family configuration: Hugging Face field names, presets.

One dataclass describes LFM2 (`model_type` "lfm2"), LFM2-MoE ("lfm2_moe": LFM2 whose
feed-forward from `num_dense_layers` on is a sparse mixture of `num_experts` SwiGLU experts,
`num_experts_per_tok` per token) and LFM3 ("lfm3"). LFM3 is LFM2 with longer short convs
(K=7), sliding-window attention layers (`sliding_window`, their own default RoPE),
proportional RoPE on the full-attention layers (`partial_rotary_factor` of each head
rotated), an explicit `head_dim`, a sigmoid output gate per attention head, RMSNorms on the
operator and feed-forward outputs ("sandwich"), and an unadjusted feed-forward width. An LFM2
config leaves those fields at their defaults, which switch each feature off.

`from_dict` / `from_json` read every published config.json form (hf_config.py); `to_dict`
writes the current transformers form. LFM2's feed-forward width is adjusted exactly as
transformers' `Lfm2MLP` does (`ffn_dim`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import hf_config
from .hf_config import MODEL_TYPES

LAYER_TYPES = ("conv", "full_attention", "sliding_attention")


@dataclass(frozen=True)
class LFM2Config:
    vocab_size: int = 65536
    hidden_size: int = 2560
    intermediate_size: int = 12288
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    max_position_embeddings: int = 128_000
    norm_eps: float = 1e-5
    conv_bias: bool = False
    conv_L_cache: int = 3  # K, the short-conv kernel size; the conv state keeps K-1 columns
    # None -> every layer is attention (transformers' default when neither form is given).
    layer_types: tuple[str, ...] | None = None
    rope_theta: float = 1_000_000.0
    block_multiple_of: int = 256
    block_ffn_dim_multiplier: float | None = 1.0
    block_auto_adjust_ff_dim: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2
    initializer_range: float = field(default=0.02, compare=False)
    # LFM3 (model_type "lfm3"); the defaults are LFM2's: every feature off.
    model_type: str = "lfm2"
    attention_head_dim: int | None = None     # HF `head_dim`; None = hidden_size / heads
    sliding_window: int | None = None         # a sliding_attention query sees its last N positions
    sliding_rope_theta: float = 10_000.0      # sliding_attention layers: default RoPE, this theta
    partial_rotary_factor: float = 1.0        # full_attention layers: share of head_dim rotated
    use_sandwich_norm: bool = False           # RMSNorm on operator and FFN outputs
    use_attention_gate: bool = False          # out *= sigmoid(gate_proj(h)) per head
    attention_bias: bool = False              # q/k/v/o projections with bias
    # LFM2-MoE (model_type "lfm2_moe"): layers from num_dense_layers on have a sparse FFN.
    num_experts: int = 0                      # experts per MoE layer; 0 = dense FFN everywhere
    num_experts_per_tok: int = 4              # experts each token is routed to
    moe_intermediate_size: int = 0            # each expert's SwiGLU width
    num_dense_layers: int = 0                 # the first layers keep the dense FFN
    use_expert_bias: bool = True              # routing picks by score + expert_bias
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True               # the picked experts' weights sum to 1

    def __post_init__(self):
        lt = self.layer_types
        if lt is None:
            lt = ("full_attention",) * self.num_hidden_layers
        elif not isinstance(lt, (list, tuple)) or not all(isinstance(t, str) for t in lt):
            raise ValueError(f"layer_types must be a list of strings from {LAYER_TYPES}, got {lt!r}")
        object.__setattr__(self, "layer_types", tuple(lt))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        self._check_types()
        self._validate()

    def _check_types(self):
        """A config.json with a wrong-typed value fails here, naming it, not later in arithmetic."""
        for name in ("conv_L_cache", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
                     "num_dense_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an int, got {v!r}")
        for name in ("norm_eps", "rope_theta", "sliding_rope_theta", "partial_rotary_factor",
                     "routed_scaling_factor", "block_ffn_dim_multiplier"):
            v = getattr(self, name)
            if v is None and name == "block_ffn_dim_multiplier":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        e = self.eos_token_id
        if not (e is None or (isinstance(e, int) and not isinstance(e, bool)) or
                (isinstance(e, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in e))):
            raise ValueError(f"eos_token_id must be a token id, a list of them, or null; got {e!r}")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.attention_head_dim or self.hidden_size // self.num_attention_heads

    @property
    def ffn_dim(self) -> int:
        """The SwiGLU width actually built, exactly as transformers' Lfm2MLP computes it."""
        ff = self.intermediate_size
        if self.block_auto_adjust_ff_dim:
            ff = int(2 * ff / 3)
            if self.block_ffn_dim_multiplier is not None:
                ff = int(self.block_ffn_dim_multiplier * ff)
                m = self.block_multiple_of
                ff = m * ((ff + m - 1) // m)
        return ff

    @property
    def full_attn_idxs(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == "full_attention")

    @property
    def rotary_dims(self) -> int:
        """How many of head_dim's dims the full-attention RoPE rotates (the rest see angle 0):
        transformers' proportional RoPE, which with factor 1.0 is the default one."""
        return 2 * int(self.partial_rotary_factor * self.head_dim // 2)

    @property
    def rope_parameters(self) -> dict:
        if self.model_type != "lfm3":
            return {"rope_type": "default", "rope_theta": self.rope_theta}
        return {"full_attention": {"rope_type": "proportional", "rope_theta": self.rope_theta,
                                   "partial_rotary_factor": self.partial_rotary_factor},
                "sliding_attention": {"rope_type": "default", "rope_theta": self.sliding_rope_theta}}

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        return () if e is None else (e,) if isinstance(e, int) else tuple(e)

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                     "block_multiple_of"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.conv_L_cache, bool) or not isinstance(self.conv_L_cache, int) \
                or self.conv_L_cache < 1:
            raise ValueError(f"conv_L_cache (the conv kernel size K) must be an int >= 1, "
                             f"got {self.conv_L_cache!r}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r}: expected one of {MODEL_TYPES}")
        if (self.model_type == "lfm2_moe") != (self.num_experts > 0):
            raise ValueError(f"num_experts={self.num_experts!r}: an lfm2_moe config needs num_experts >= 1, "
                             "other model types 0")
        if self.num_experts:
            if not 1 <= self.num_experts_per_tok <= self.num_experts:
                raise ValueError(f"num_experts_per_tok={self.num_experts_per_tok!r} must be in "
                                 f"[1, num_experts={self.num_experts}]")
            if self.moe_intermediate_size < 1:
                raise ValueError(f"moe_intermediate_size={self.moe_intermediate_size!r} must be >= 1")
            if not 0 <= self.num_dense_layers <= self.num_hidden_layers:
                raise ValueError(f"num_dense_layers={self.num_dense_layers!r} must be in "
                                 f"[0, num_hidden_layers={self.num_hidden_layers}]")
        if self.attention_head_dim is not None and (
                isinstance(self.attention_head_dim, bool) or not isinstance(self.attention_head_dim, int)
                or self.attention_head_dim < 2):
            raise ValueError(f"head_dim must be an int >= 2, got {self.attention_head_dim!r}")
        if self.attention_head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must divide "
                             f"hidden_size={self.hidden_size} (or give head_dim)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads={self.num_key_value_heads} must divide "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim = {self.head_dim} must be even for RoPE")
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries, expected "
                             f"num_hidden_layers={self.num_hidden_layers}")
        bad = sorted({t for t in self.layer_types if t not in LAYER_TYPES})
        if bad:
            raise ValueError(f"layer_types contains {bad}; each entry must be one of {LAYER_TYPES}")
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise ValueError(f"norm_eps must be a positive float, got {self.norm_eps!r}")
        for name in ("rope_theta", "sliding_rope_theta"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive float, got {v!r}")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise ValueError(f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor!r}")
        if "sliding_attention" in self.layer_types and (
                isinstance(self.sliding_window, bool) or not isinstance(self.sliding_window, int)
                or self.sliding_window < 1):
            raise ValueError(f"sliding_attention layers need sliding_window, an int >= 1 (the "
                             f"positions a query sees, itself included), got {self.sliding_window!r}")
        if self.ffn_dim < 1:
            raise ValueError(f"intermediate_size={self.intermediate_size} gives a feed-forward "
                             f"width of {self.ffn_dim} after adjustment; it must be >= 1")
        for name in ("pad_token_id", "bos_token_id"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and 0 <= v < self.vocab_size):
                raise ValueError(f"{name}={v!r} must be None or in [0, vocab_size={self.vocab_size})")
        for v in self.eos_token_ids:
            if not (isinstance(v, int) and 0 <= v < self.vocab_size):
                raise ValueError(f"eos_token_id={self.eos_token_id!r} must be None or ids in "
                                 f"[0, vocab_size={self.vocab_size})")

    # ---- (de)serialisation ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "LFM2Config":
        """Accept LFM3's and LFM2-MoE's config.json, LFM2's current HF form and its first
        published one (hf_config.py)."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return cls(**hf_config.config_kwargs(d, defaults))

    @classmethod
    def from_json(cls, path) -> "LFM2Config":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"no LFM2 config at {path}: expected a Hugging Face config.json") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:   # printed alone by the loader and `dwserve serve`: say which file
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        """The current transformers form (what `Lfm2Config(**d)` / `Lfm3Config(**d)` accept)."""
        d = dataclasses.asdict(self)
        for name in ("rope_theta", "model_type", "attention_head_dim", "sliding_rope_theta",
                     "partial_rotary_factor"):
            d.pop(name)
        if self.model_type != "lfm3":
            for name in hf_config.LFM3_ONLY:
                d.pop(name, None)
        if self.model_type != "lfm2_moe":
            for name in hf_config.MOE_DEFAULTS:
                d.pop(name, None)
        if self.model_type != "lfm2":
            for name in ("block_multiple_of", "block_ffn_dim_multiplier", "block_auto_adjust_ff_dim"):
                d.pop(name)
        if self.model_type == "lfm3" or self.attention_head_dim is not None:
            d["head_dim"] = self.head_dim
        d["layer_types"] = list(self.layer_types)
        if isinstance(self.eos_token_id, tuple):
            d["eos_token_id"] = list(self.eos_token_id)
        d["rope_parameters"] = self.rope_parameters
        arch = {"lfm2": "Lfm2ForCausalLM", "lfm2_moe": "Lfm2MoeForCausalLM", "lfm3": "Lfm3ForCausalLM"}[self.model_type]
        return {"architectures": [arch], "model_type": self.model_type, **d}

    def replace(self, **changes) -> "LFM2Config":
        return dataclasses.replace(self, **changes)


# The presets live beside (presets.py) and are re-exported here, where they always were.
from .presets import PRESETS  # noqa: E402,F401
