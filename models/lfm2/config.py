"""LFM2-family configuration: Hugging Face field names, the published config.json forms, presets.

One dataclass describes LFM2 (`model_type` "lfm2"), LFM2-MoE ("lfm2_moe": LFM2 whose
feed-forward from `num_dense_layers` on is a sparse mixture of `num_experts` SwiGLU experts,
`num_experts_per_tok` per token) and LFM3 ("lfm3"); LFM3 is LFM2 with
longer short convs (K=7), sliding-window attention layers (`sliding_window`, their own
default RoPE), proportional RoPE on the full-attention layers (`partial_rotary_factor` of
each head rotated), an explicit `head_dim`, a sigmoid output gate per attention head, RMSNorms
on the operator and feed-forward outputs ("sandwich"), and an unadjusted feed-forward width.
An LFM2 config leaves those fields at their defaults, which switch each feature off.

Two LFM2 forms of `config.json` exist in the wild and both must load the same:
- current transformers form: `layer_types` (one of "conv"/"full_attention" per layer) and
  `rope_parameters = {"rope_type": "default", "rope_theta": ...}`;
- the first published LFM2 form: `full_attn_idxs`, top-level `rope_theta` (and `theta`),
  `block_ff_dim` (overrides `intermediate_size`, as transformers does), `block_dim` /
  `conv_dim` (must equal `hidden_size`), `tie_embedding`, `num_heads`, `block_norm_eps`.
The feed-forward width is adjusted exactly as transformers' `Lfm2MLP` does (`ffn_dim`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

LAYER_TYPES = ("conv", "full_attention", "sliding_attention")
MODEL_TYPES = ("lfm2", "lfm2_moe", "lfm3")

# Keys of a published config.json that carry no architecture information; ignored on load.
_METADATA_KEYS = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "initializer_range", "block_mlp_init_scale", "block_out_init_scale", "block_use_xavier_init",
    "conv_use_xavier_init", "use_pos_enc", "output_attentions", "output_hidden_states",
    "return_dict", "_name_or_path", "quantization", "quantization_config",
}


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
        elif isinstance(lt, str) or not all(isinstance(t, str) for t in lt):
            raise ValueError(f"layer_types must be a list of strings from {LAYER_TYPES}, got {lt!r}")
        object.__setattr__(self, "layer_types", tuple(lt))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        self._validate()

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
    def attention_idxs(self) -> tuple[int, ...]:
        """Layers with keys and values: full and sliding-window attention."""
        return tuple(i for i, t in enumerate(self.layer_types) if t != "conv")

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
        """Accept LFM3's config.json, LFM2's current HF form and its first published one (see
        the module docstring)."""
        if not isinstance(d, dict):
            raise ValueError(f"an LFM2 config must be a dict (config.json), got {type(d).__name__}")
        d = dict(d)
        model_type = d.pop("model_type", "lfm2")
        if model_type == "lfm3":
            return cls._from_lfm3_dict(d)
        if model_type not in ("lfm2", "lfm2_moe"):
            raise ValueError(f"model_type={model_type!r}: expected one of {MODEL_TYPES}")
        if model_type == "lfm2_moe":   # Lfm2MoeConfig's defaults; its dense FFN is not adjusted
            if d.get("layer_types") is None and d.get("full_attn_idxs") is None:
                raise ValueError("an lfm2_moe config.json must give layer_types (transformers has no default)")
            d = {**_MOE_DEFAULTS, **d, "model_type": "lfm2_moe", "block_auto_adjust_ff_dim": False}
        elif d.get("num_experts"):
            raise ValueError(f"num_experts={d['num_experts']!r} needs model_type 'lfm2_moe'")
        for name in _LFM3_ONLY:
            if d.get(name) not in (None, False):
                raise ValueError(f"{name}={d[name]!r} is an LFM3 field; an LFM2 config "
                                 "(model_type 'lfm2') cannot use it")
        if not d.pop("block_use_swiglu", True):
            raise ValueError("block_use_swiglu=False is not supported; LFM2 uses SwiGLU")
        # transformers: block_ff_dim / tie_embedding override their new names.
        if "block_ff_dim" in d:
            d["intermediate_size"] = d.pop("block_ff_dim")
        if "tie_embedding" in d:
            d["tie_word_embeddings"] = d.pop("tie_embedding")
        hidden = d.get("hidden_size", cls.hidden_size)
        for alias in ("block_dim", "conv_dim", "conv_dim_out"):
            if alias in d and d.pop(alias) != hidden:
                raise ValueError(f"{alias} must equal hidden_size={hidden} (LFM2 blocks keep the width)")
        _merge_alias(d, "num_heads", "num_attention_heads")
        _merge_alias(d, "block_norm_eps", "norm_eps")
        _merge_alias(d, "theta", "rope_theta")
        rope = d.pop("rope_parameters", None)
        if d.pop("rope_scaling", None) is not None:
            raise ValueError("rope_scaling is not supported; only default RoPE (rope_type='default')")
        if rope is not None:
            if not isinstance(rope, dict) or rope.get("rope_type", "default") != "default":
                raise ValueError(f"rope_parameters={rope!r}: only rope_type='default' is supported")
            if "rope_theta" in rope:
                d["rope_parameters.rope_theta"] = rope["rope_theta"]
                _merge_alias(d, "rope_parameters.rope_theta", "rope_theta")
        idxs = d.pop("full_attn_idxs", None)
        if idxs is not None:
            n = d.get("num_hidden_layers", cls.num_hidden_layers)
            bad = [i for i in idxs if not (isinstance(i, int) and 0 <= i < n)]
            if bad:
                raise ValueError(f"full_attn_idxs {bad} out of range for num_hidden_layers={n}")
            from_idxs = ["full_attention" if i in idxs else "conv" for i in range(n)]
            if d.get("layer_types") is not None and list(d["layer_types"]) != from_idxs:
                raise ValueError("full_attn_idxs and layer_types disagree; give one of them")
            d["layer_types"] = from_idxs
        if "sliding_attention" in (d.get("layer_types") or ()):
            raise ValueError("layer_types has 'sliding_attention', an LFM3 layer; set "
                             "model_type to 'lfm3' for such a config")
        return cls._build(d)

    @classmethod
    def _from_lfm3_dict(cls, d: dict) -> "LFM2Config":
        """transformers' Lfm3Config: its defaults fill what config.json leaves out."""
        d = {**_LFM3_DEFAULTS, **d}
        _merge_alias(d, "rms_norm_eps", "norm_eps")
        if d.get("layer_types") is None:
            n = d["num_hidden_layers"]
            d["layer_types"] = ["full_attention" if i % 4 == 2 else
                                "sliding_attention" if i % 4 == 0 and i > 0 else "conv" for i in range(n)]
        if d.pop("rope_scaling", None) is not None:
            raise ValueError("rope_scaling is not supported; give LFM3's rope_parameters")
        d.update(_lfm3_rope(d.pop("rope_parameters", None)))
        d["attention_head_dim"] = d.pop("head_dim")
        d.update(model_type="lfm3", block_auto_adjust_ff_dim=False)   # Lfm3MLP: intermediate_size as is
        return cls._build(d)

    @classmethod
    def _build(cls, d: dict) -> "LFM2Config":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k in ("eos_token_id", "layer_types"):
            if isinstance(kwargs.get(k), list):
                kwargs[k] = tuple(kwargs[k])
        for k in ("block_ffn_dim_multiplier", "rope_theta", "sliding_rope_theta", "partial_rotary_factor",
                  "routed_scaling_factor"):
            if isinstance(kwargs.get(k), int) and not isinstance(kwargs[k], bool):
                kwargs[k] = float(kwargs[k])
        return cls(**kwargs)

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
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        """The current transformers form (what `Lfm2Config(**d)` / `Lfm3Config(**d)` accept)."""
        d = dataclasses.asdict(self)
        for name in ("rope_theta", "model_type", "attention_head_dim", "sliding_rope_theta",
                     "partial_rotary_factor"):
            d.pop(name)
        if self.model_type != "lfm3":
            for name in _LFM3_ONLY:
                d.pop(name, None)
        if self.model_type != "lfm2_moe":
            for name in _MOE_DEFAULTS:
                d.pop(name, None)
        if self.model_type != "lfm2":
            for name in ("block_multiple_of", "block_ffn_dim_multiplier", "block_auto_adjust_ff_dim"):
                d.pop(name)
        if self.model_type == "lfm3":
            d["head_dim"] = self.head_dim
        d["layer_types"] = list(self.layer_types)
        if isinstance(self.eos_token_id, tuple):
            d["eos_token_id"] = list(self.eos_token_id)
        d["rope_parameters"] = self.rope_parameters
        arch = {"lfm2": "Lfm2ForCausalLM", "lfm2_moe": "Lfm2MoeForCausalLM", "lfm3": "Lfm3ForCausalLM"}[self.model_type]
        return {"architectures": [arch], "model_type": self.model_type, **d}

    def replace(self, **changes) -> "LFM2Config":
        return dataclasses.replace(self, **changes)


# Fields only an LFM3 config may set (LFM2 leaves them at their off defaults).
_LFM3_ONLY = ("sliding_window", "use_sandwich_norm", "use_attention_gate", "attention_bias")

# transformers' Lfm2MoeConfig defaults (LFM2-8B-A1B) for the MoE fields.
_MOE_DEFAULTS = dict(num_experts=32, num_experts_per_tok=4, moe_intermediate_size=1792,
                     num_dense_layers=2, use_expert_bias=True, routed_scaling_factor=1.0,
                     norm_topk_prob=True)

# transformers' Lfm3Config defaults (LFM3-1.7B), for keys an LFM3 config.json leaves out.
_LFM3_DEFAULTS = dict(vocab_size=128_000, hidden_size=2048, intermediate_size=7680,
                      num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=4,
                      head_dim=128, max_position_embeddings=128_000, norm_eps=1e-5,
                      pad_token_id=124_893, bos_token_id=124_894, eos_token_id=124_900,
                      tie_word_embeddings=True, conv_bias=False, conv_L_cache=7, sliding_window=256,
                      use_sandwich_norm=True, use_attention_gate=True, attention_bias=False)
_LFM3_ROPE = {"full_attention": {"rope_type": "proportional", "rope_theta": 1_000_000.0,
                                 "partial_rotary_factor": 0.5},
              "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}


def _lfm3_rope(rope) -> dict:
    """An LFM3 `rope_parameters` (per layer type, or one dict for both) -> our RoPE fields."""
    if rope is None:
        rope = _LFM3_ROPE
    if not isinstance(rope, dict):
        raise ValueError(f"rope_parameters must be a dict, got {rope!r}")
    if not {"full_attention", "sliding_attention"} & set(rope):
        rope = {"full_attention": rope, "sliding_attention": rope}
    full = rope.get("full_attention", _LFM3_ROPE["full_attention"])
    sliding = rope.get("sliding_attention", _LFM3_ROPE["sliding_attention"])
    for kind, p, types in (("full_attention", full, ("default", "proportional")),
                           ("sliding_attention", sliding, ("default",))):
        if not isinstance(p, dict) or p.get("rope_type", "default") not in types \
                or p.get("factor", 1.0) != 1.0 or "rope_theta" not in p:
            raise ValueError(f"rope_parameters[{kind!r}]={p!r}: expected rope_type in {types} "
                             "with a rope_theta and no scaling factor")
    partial = float(full.get("partial_rotary_factor", 1.0))
    if full.get("rope_type", "default") == "default" and partial != 1.0:
        raise ValueError("a partial_rotary_factor with rope_type 'default' is not supported; "
                         "LFM3 uses 'proportional'")
    if sliding.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("sliding_attention RoPE must rotate the whole head (no partial_rotary_factor)")
    return dict(rope_theta=float(full["rope_theta"]), partial_rotary_factor=partial,
                sliding_rope_theta=float(sliding["rope_theta"]))


def _merge_alias(d: dict, alias: str, name: str):
    """Move `alias` onto `name`; both given and different -> ValueError naming both."""
    if alias not in d:
        return
    v = d.pop(alias)
    if name in d and d[name] is not None and v is not None and d[name] != v:
        raise ValueError(f"{alias}={v!r} contradicts {name}={d[name]!r}; they must be equal")
    d.setdefault(name, v)


def _attn_layers(n: int, idxs) -> tuple[str, ...]:
    return tuple("full_attention" if i in idxs else "conv" for i in range(n))


# Architecture only (no weights), values from the published LiquidAI config.json files.
# FFN widths after adjustment: 350m 4608, 700m 6912, 1.2b 8192, 2.6b 10752 (no adjustment).
_PUBLISHED = dict(vocab_size=65536, max_position_embeddings=128_000, num_key_value_heads=8,
                  norm_eps=1e-5, conv_L_cache=3, rope_theta=1_000_000.0, pad_token_id=0,
                  bos_token_id=1, eos_token_id=7)
_IDX16 = (2, 5, 8, 10, 12, 14)
PRESETS: dict[str, LFM2Config] = {
    "lfm2-350m": LFM2Config(**_PUBLISHED, hidden_size=1024, intermediate_size=6656,
                            num_hidden_layers=16, num_attention_heads=16,
                            layer_types=_attn_layers(16, _IDX16)),
    "lfm2-700m": LFM2Config(**_PUBLISHED, hidden_size=1536, intermediate_size=10240,
                            num_hidden_layers=16, num_attention_heads=24,
                            layer_types=_attn_layers(16, _IDX16)),
    "lfm2-1.2b": LFM2Config(**_PUBLISHED, hidden_size=2048, intermediate_size=12288,
                            num_hidden_layers=16, num_attention_heads=32,
                            layer_types=_attn_layers(16, _IDX16)),
    "lfm2-2.6b": LFM2Config(**_PUBLISHED, hidden_size=2048, intermediate_size=10752,
                            num_hidden_layers=30, num_attention_heads=32,
                            block_auto_adjust_ff_dim=False,
                            layer_types=_attn_layers(30, (2, 5, 9, 13, 17, 21, 24, 27))),
    # LFM3-1.7B: transformers' Lfm3Config defaults are its published architecture (K=7 short
    # convs in 13 of 24 layers, 5 sliding-window (256) and 6 full attention layers, head_dim 128).
    "lfm3-1.7b": LFM2Config.from_dict({"model_type": "lfm3"}),
    # The embedded default: seeded random weights + the byte tokenizer (tokenizer.py: bytes
    # 0..255, specials 256..258). 5 conv layers of 1024 channels (so per_group's 1024 launches
    # per layer show), 1 attention layer, a small FFN (384) so the convs are most of the work.
    # Depthwise share = time inside the depthwise block / wall time of the forward
    # (models.profiling.depthwise_timer). Measured on the project's 2-core CPU box, 2 torch
    # threads, after the (B, L, C)-layout slice_sum block (tests/test_lfm2_perf.py re-measures:
    # DWSERVE_PERF=1); prefill = next_token_logits on 128 tokens, decode = one step at pos 128:
    #                  per_group (before)    auto (after)
    #   prefill 128    139 ms  52.6 %        66 ms  3.2 %
    #   decode b=1      78 ms  86.5 %         9 ms  4.7 %
    #   decode b=8     468 ms  95.0 %        23 ms  4.5 %
    # The window is narrow by nature: per conv layer per_group costs ~C launches (~15 ms) and
    # the auto block ~0.4 ms at prefill, ~0.06 ms at decode, so the rest of the layer must
    # cost ~15 ms at prefill and >= 1.2 ms at decode; the FFN width moves both together
    # (same box: FFN 512 gave prefill 48 % / 2.9 %, FFN 768 51 % / 4.1 % with decode 4.8 %).
    "lfm2-demo": LFM2Config(vocab_size=264, hidden_size=1024, intermediate_size=384,
                            block_auto_adjust_ff_dim=False, num_hidden_layers=6,
                            num_attention_heads=16, num_key_value_heads=4,
                            max_position_embeddings=4096, rope_theta=1_000_000.0,
                            layer_types=_attn_layers(6, (3,)), pad_token_id=256,
                            bos_token_id=257, eos_token_id=258),
}
