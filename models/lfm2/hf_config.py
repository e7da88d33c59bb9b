"""The published `config.json` forms of the LFM2 family -> LFM2Config's fields.

- LFM2, current transformers form: `layer_types` (one of "conv"/"full_attention" per layer)
  and `rope_parameters = {"rope_type": "default", "rope_theta": ...}`; `head_dim` when given
  (else hidden_size / num_attention_heads, as transformers' Lfm2Attention);
- LFM2, the first published form: `full_attn_idxs`, top-level `rope_theta` (and `theta`),
  `block_ff_dim` (overrides `intermediate_size`, as transformers does), `block_dim` /
  `conv_dim` (must equal `hidden_size`), `tie_embedding`, `num_heads`, `block_norm_eps`;
- LFM2-MoE (`model_type` "lfm2_moe"): an LFM2 form plus the expert fields; transformers'
  Lfm2MoeConfig defaults fill those it leaves out;
- LFM3 (`model_type` "lfm3"): `head_dim`, `sliding_window`, `rope_parameters` per attention
  layer type; transformers' Lfm3Config defaults fill what it leaves out.
Pure dict work (no torch); every contradiction is a ValueError naming the fields.
"""
from __future__ import annotations

MODEL_TYPES = ("lfm2", "lfm2_moe", "lfm3")

# Fields only an LFM3 config may set (LFM2 leaves them at their off defaults).
LFM3_ONLY = ("sliding_window", "use_sandwich_norm", "use_attention_gate", "attention_bias")

# transformers' Lfm2MoeConfig defaults (LFM2-8B-A1B) for the MoE fields.
MOE_DEFAULTS = dict(num_experts=32, num_experts_per_tok=4, moe_intermediate_size=1792,
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


def config_kwargs(d: dict, defaults: dict) -> dict:
    """A published config.json (any form above) -> LFM2Config keyword arguments. defaults:
    LFM2Config's field defaults by name."""
    if not isinstance(d, dict):
        raise ValueError(f"an LFM2 config must be a dict (config.json), got {type(d).__name__}")
    d = dict(d)
    model_type = d.pop("model_type", "lfm2")
    if model_type == "lfm3":
        return _lfm3_kwargs(d, defaults)
    if model_type not in ("lfm2", "lfm2_moe"):
        raise ValueError(f"model_type={model_type!r}: expected one of {MODEL_TYPES}")
    if model_type == "lfm2_moe":   # Lfm2MoeConfig's defaults; its dense FFN is not adjusted
        if d.get("layer_types") is None and d.get("full_attn_idxs") is None:
            raise ValueError("an lfm2_moe config.json must give layer_types (transformers has no default)")
        d = {**MOE_DEFAULTS, **d, "model_type": "lfm2_moe", "block_auto_adjust_ff_dim": False}
    elif d.get("num_experts"):
        raise ValueError(f"num_experts={d['num_experts']!r} needs model_type 'lfm2_moe'")
    for name in LFM3_ONLY:
        if d.get(name) not in (None, False):
            raise ValueError(f"{name}={d[name]!r} is an LFM3 field; an LFM2 or LFM2-MoE config "
                             f"(model_type {model_type!r}) cannot use it")
    if not d.pop("block_use_swiglu", True):
        raise ValueError("block_use_swiglu=False is not supported; LFM2 uses SwiGLU")
    # transformers: block_ff_dim / tie_embedding override their new names.
    if "block_ff_dim" in d:
        d["intermediate_size"] = d.pop("block_ff_dim")
    if "tie_embedding" in d:
        d["tie_word_embeddings"] = d.pop("tie_embedding")
    hidden = d.get("hidden_size", defaults["hidden_size"])
    for alias in ("block_dim", "conv_dim", "conv_dim_out"):
        if alias in d and d.pop(alias) != hidden:
            raise ValueError(f"{alias} must equal hidden_size={hidden} (LFM2 blocks keep the width)")
    if d.get("head_dim") is not None:   # transformers' Lfm2Attention: config.head_dim, else hidden / heads
        d["attention_head_dim"] = d.pop("head_dim")
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
        n = d.get("num_hidden_layers", defaults["num_hidden_layers"])
        bad = [i for i in idxs if not (isinstance(i, int) and 0 <= i < n)]
        if bad:
            raise ValueError(f"full_attn_idxs {bad} out of range for num_hidden_layers={n}")
        from_idxs = ["full_attention" if i in idxs else "conv" for i in range(n)]
        if d.get("layer_types") is not None and list(d["layer_types"]) != from_idxs:
            raise ValueError("full_attn_idxs and layer_types disagree; give one of them")
        d["layer_types"] = from_idxs
    if isinstance(d.get("layer_types"), (list, tuple)) and "sliding_attention" in d["layer_types"]:
        raise ValueError("layer_types has 'sliding_attention', an LFM3 layer; set "
                         "model_type to 'lfm3' for such a config")
    return _kwargs(d, defaults)


def _lfm3_kwargs(d: dict, defaults: dict) -> dict:
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
    return _kwargs(d, defaults)


def _kwargs(d: dict, defaults: dict) -> dict:
    """Known fields only (metadata keys dropped), lists as tuples, numbers as floats where the
    field is one."""
    kwargs = {k: v for k, v in d.items() if k in defaults}
    for k in ("eos_token_id", "layer_types"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = tuple(kwargs[k])
    for k in ("block_ffn_dim_multiplier", "rope_theta", "sliding_rope_theta", "partial_rotary_factor",
              "routed_scaling_factor"):
        if isinstance(kwargs.get(k), int) and not isinstance(kwargs[k], bool):
            kwargs[k] = float(kwargs[k])
    return kwargs

