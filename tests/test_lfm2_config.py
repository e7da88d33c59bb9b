"""LFM2Config: both published config.json forms, the FFN auto-adjustment against
transformers' own Lfm2MLP, presets, and ValueErrors that name the field."""
import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.lfm2 import PRESETS, LFM2Config  # noqa: E402

NEW_FORM = {
    "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "vocab_size": 65536,
    "hidden_size": 1024, "intermediate_size": 6656, "num_hidden_layers": 16,
    "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 128000,
    "norm_eps": 1e-5, "conv_bias": False, "conv_L_cache": 3, "block_multiple_of": 256,
    "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": True,
    "layer_types": ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)],
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 7,
    "torch_dtype": "bfloat16", "transformers_version": "4.57.0", "use_cache": True,
}
# The first published LFM2-350M config.json spelled the same architecture like this.
OLD_FORM = {
    "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "vocab_size": 65536,
    "hidden_size": 1024, "block_dim": 1024, "conv_dim": 1024, "conv_dim_out": 1024,
    "block_ff_dim": 6656, "intermediate_size": 6656, "num_hidden_layers": 16, "num_heads": 16,
    "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 128000,
    "norm_eps": 1e-5, "block_norm_eps": 1e-5, "conv_bias": False, "conv_L_cache": 3,
    "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": True,
    "block_use_swiglu": True, "block_use_xavier_init": True, "block_mlp_init_scale": 1.0,
    "full_attn_idxs": [2, 5, 8, 10, 12, 14], "rope_theta": 1000000.0, "theta": 1000000.0,
    "tie_embedding": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 7,
    "use_pos_enc": True, "initializer_range": 0.02,
}


def test_old_and_new_forms_give_the_same_config(tmp_path):
    new, old = LFM2Config.from_dict(NEW_FORM), LFM2Config.from_dict(OLD_FORM)
    assert new == old == PRESETS["lfm2-350m"]
    assert new.ffn_dim == 4608 and new.full_attn_idxs == (2, 5, 8, 10, 12, 14)
    (tmp_path / "config.json").write_text(json.dumps(OLD_FORM))
    assert LFM2Config.from_json(tmp_path) == new
    assert LFM2Config.from_dict(new.to_dict()) == new


@pytest.mark.parametrize("ff, mult, multiple, adjust", [
    pytest.param(6656, 1.0, 256, True, id="350m"),
    pytest.param(10240, 1.0, 256, True, id="700m"),
    pytest.param(10752, 1.0, 256, False, id="2.6b-no-adjust"),
    pytest.param(1000, 1.5, 64, True, id="multiplier-1.5"),
    pytest.param(999, None, 256, True, id="no-multiplier-no-rounding"),
    pytest.param(97, 0.7, 10, True, id="odd"),
])
def test_ffn_width_matches_transformers_mlp(ff, mult, multiple, adjust):
    ours = LFM2Config(hidden_size=64, intermediate_size=ff, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, block_multiple_of=multiple,
                      block_ffn_dim_multiplier=mult, block_auto_adjust_ff_dim=adjust)
    hf_cfg = transformers.Lfm2Config(**{k: v for k, v in ours.to_dict().items()
                                        if k not in ("architectures", "model_type")
                                        and v is not None})
    # Newer transformers' strict config refuses None here, yet Lfm2MLP handles it: set it raw.
    object.__setattr__(hf_cfg, "block_ffn_dim_multiplier", mult)
    with torch.device("meta"):
        mlp = transformers.models.lfm2.modeling_lfm2.Lfm2MLP(hf_cfg)
    assert tuple(mlp.w1.weight.shape) == (ours.ffn_dim, 64)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in PRESETS])
def test_presets_round_trip_through_transformers(name):
    cfg = PRESETS[name]
    kind = getattr(transformers, "Lfm3Config" if cfg.model_type == "lfm3" else "Lfm2Config", None)
    if kind is None:
        pytest.skip(f"transformers {transformers.__version__} has no {cfg.model_type} config")
    hf = kind(**{k: v for k, v in cfg.to_dict().items() if k not in ("architectures", "model_type")})
    assert list(hf.layer_types) == list(cfg.layer_types)
    full = hf.rope_parameters.get("full_attention", hf.rope_parameters)
    assert full["rope_theta"] == cfg.rope_theta
    assert LFM2Config.from_dict(hf.to_dict()) == cfg


def test_published_preset_shapes():
    widths = {n: (PRESETS[n].hidden_size, PRESETS[n].ffn_dim, PRESETS[n].num_hidden_layers,
                  len(PRESETS[n].full_attn_idxs)) for n in PRESETS if not n.endswith("-demo")}
    assert widths == {"lfm2-350m": (1024, 4608, 16, 6), "lfm2-700m": (1536, 6912, 16, 6),
                      "lfm2-1.2b": (2048, 8192, 16, 6), "lfm2-2.6b": (2048, 10752, 30, 8),
                      "lfm3-1.7b": (2048, 7680, 24, 6)}
    assert PRESETS["lfm2-demo"].hidden_size >= 1024


@pytest.mark.parametrize("changes, field", [
    pytest.param({"layer_types": ["conv"] * 15 + ["mamba"]}, "layer_types", id="unknown-layer-type"),
    pytest.param({"layer_types": ["conv"] * 3}, "layer_types", id="layer-count"),
    pytest.param({"conv_L_cache": 0}, "conv_L_cache", id="K-zero"),
    pytest.param({"num_attention_heads": 15}, "num_attention_heads", id="heads-not-dividing"),
    pytest.param({"num_key_value_heads": 3}, "num_key_value_heads", id="kv-not-dividing"),
    pytest.param({"hidden_size": -8}, "hidden_size", id="negative-hidden"),
    pytest.param({"block_dim": 512}, "block_dim", id="block-dim-mismatch"),
    pytest.param({"theta": 10.0, "rope_theta": 20.0}, "theta", id="theta-contradiction"),
    pytest.param({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "rope_type", id="yarn"),
    pytest.param({"full_attn_idxs": [2, 40]}, "full_attn_idxs", id="attn-idx-range"),
    pytest.param({"model_type": "llama"}, "model_type", id="model-type"),
    pytest.param({"eos_token_id": 70000}, "eos_token_id", id="eos-out-of-vocab"),
    pytest.param({"norm_eps": 0.0}, "norm_eps", id="eps-zero"),
])
def test_bad_config_names_the_field(changes, field):
    d = {**NEW_FORM, **changes}
    if "full_attn_idxs" in changes:
        d.pop("layer_types")
    with pytest.raises(ValueError, match=field):
        LFM2Config.from_dict(d)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        LFM2Config.from_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        LFM2Config.from_json(tmp_path)


def test_a_bad_field_in_a_config_file_names_the_file(tmp_path):
    """A directory of another model (a Llama, LFM2-VL) fails on its model_type; the message says
    which file, since the loader and `dwserve serve` print it alone."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'config.json'))}: model_type='llama'"):
        LFM2Config.from_json(tmp_path)


def _bases():
    lfm2 = LFM2Config().to_dict()
    moe = {k: v for k, v in lfm2.items() if not k.startswith("block_")}
    moe.update(model_type="lfm2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8)
    return {"lfm2": lfm2, "lfm3": LFM2Config.from_dict({"model_type": "lfm3"}).to_dict(), "lfm2_moe": moe}


@pytest.mark.parametrize("kind", ["lfm2", "lfm3", "lfm2_moe"])
def test_any_wrong_value_in_a_config_json_is_a_value_error(kind):
    """Every field of a published config set to a wrong type or value: it loads, or fails
    with a ValueError (what the service reports), never a TypeError from deeper down."""
    base = _bases()[kind]
    assert LFM2Config.from_dict(base).model_type == kind
    wrong = ["x", None, [1], {"a": 1}, -1, 0, 1.5, True, float("nan"), 10**30]
    for key in base:
        for value in wrong:
            try:
                LFM2Config.from_dict({**base, key: value})
            except ValueError:
                pass
