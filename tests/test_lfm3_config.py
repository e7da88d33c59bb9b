"""LFM3 checkpoints and configs against transformers' Lfm3Config / Lfm3ForCausalLM: tensor
names, a missing tensor named, config defaults and round trip, the lfm3-1.7b preset, and bad
configs refused naming what was expected. (Logits, decoding and serving: test_lfm3.py.)"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.lfm2 import LFM2Config, LFM2ForCausalLM  # noqa: E402

from hf_reference import assert_missing_tensor_is_named  # noqa: E402
from test_lfm3 import make_hf, needs_lfm3  # noqa: E402


def test_transformers_names_load_too(tmp_path):
    """transformers names the gate g_proj in memory; a checkpoint saved under that name loads."""
    from safetensors.torch import load_file, save_file
    make_hf(tmp_path, seed=8)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {k.replace(".gate_proj.", ".g_proj."): v for k, v in tensors.items()}
    assert renamed.keys() != tensors.keys()
    save_file(renamed, tmp_path / "model.safetensors")
    ours = LFM2ForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(ours.model.layers[1].self_attn.gate_proj.weight,
                               tensors["model.layers.1.self_attn.gate_proj.weight"])


def test_a_missing_gate_is_named(tmp_path):
    make_hf(tmp_path, seed=9)
    assert_missing_tensor_is_named(tmp_path, "model.layers.4.self_attn.gate_proj.weight")


@needs_lfm3
def test_config_defaults_and_round_trip_equal_transformers():
    """A bare LFM3 config.json gets transformers' Lfm3Config defaults; to_dict goes back."""
    ref = transformers.Lfm3Config()
    ours = LFM2Config.from_dict({"model_type": "lfm3"})
    assert list(ours.layer_types) == ref.layer_types
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "head_dim",
                 "num_attention_heads", "num_key_value_heads", "sliding_window", "conv_L_cache",
                 "eos_token_id", "use_sandwich_norm", "use_attention_gate"):
        assert getattr(ours, name) == getattr(ref, name), name
    d = ours.to_dict()
    assert d["rope_parameters"] == ref.rope_parameters and d["architectures"] == ["Lfm3ForCausalLM"]
    assert LFM2Config.from_dict(d) == ours
    again = transformers.Lfm3Config(**{k: v for k, v in d.items() if k not in ("architectures", "model_type")})
    assert again.layer_types == ref.layer_types and again.head_dim == 128


@needs_lfm3
def test_the_lfm3_preset_is_transformers_lfm3_1_7b():
    from models.lfm2 import PRESETS
    with torch.device("meta"):
        ours = LFM2ForCausalLM(PRESETS["lfm3-1.7b"])
        ref = transformers.Lfm3ForCausalLM(transformers.Lfm3Config())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(ref) > 1.7e9
    assert PRESETS["lfm3-1.7b"].layer_types.count("conv") == 13


@pytest.mark.parametrize("d, match", [
    pytest.param({"model_type": "lfm3", "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}},
                 "rope_type", id="yarn"),
    pytest.param({"model_type": "lfm3", "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5}}},
                 "proportional", id="partial-default"),
    pytest.param({"model_type": "lfm3", "sliding_window": None}, "sliding_window", id="no-window"),
    pytest.param({"model_type": "lfm3", "head_dim": 7}, "even", id="odd-head-dim"),
    pytest.param({"model_type": "lfm2", "sliding_window": 8}, "LFM3 field", id="lfm2-with-window"),
    pytest.param({"model_type": "lfm2", "layer_types": ["sliding_attention"], "num_hidden_layers": 1},
                 "model_type", id="lfm2-sliding-layer"),
    pytest.param({"model_type": "lfm4"}, "expected one of", id="unknown-type"),
])
def test_bad_configs_are_refused_naming_what_was_expected(d, match):
    with pytest.raises(ValueError, match=match):
        LFM2Config.from_dict(d)
