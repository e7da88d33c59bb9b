"""Strict checkpoint loading (single file, sharded, old config form, broken checkpoints),
tokenizers, and the embedded lfm2-demo preset."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers")

from models.lfm2 import PRESETS, ByteTokenizer, LFM2ForCausalLM  # noqa: E402
from test_lfm2 import make_hf, rand_ids  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_ckpt")
    make_hf(path, seed=11)
    return path


def copy_ckpt(src, dst, tensors=None, config=None):
    dst.mkdir(exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    save_file(tensors if tensors is not None else load_file(src / "model.safetensors"),
              dst / "model.safetensors")
    return dst


def logits(model, seed=0):
    with torch.inference_mode():
        return model(rand_ids(2, 6, seed=seed))


def test_sharded_checkpoint_loads_the_same(ckpt, tmp_path):
    tensors = load_file(ckpt / "model.safetensors")
    names = sorted(tensors)
    shards = {f"model-0000{i + 1}-of-00003.safetensors": names[i::3] for i in range(3)}
    weight_map = {}
    for fname, part in shards.items():
        save_file({n: tensors[n] for n in part}, tmp_path / fname)
        weight_map.update({n: fname for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(ckpt / "config.json", tmp_path / "config.json")
    torch.testing.assert_close(logits(LFM2ForCausalLM.from_pretrained(tmp_path)),
                               logits(LFM2ForCausalLM.from_pretrained(ckpt)))
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ValueError, match="model-00002-of-00003"):
        LFM2ForCausalLM.from_pretrained(tmp_path)


def test_old_config_form_loads_the_same_weights(ckpt, tmp_path):
    new = json.loads((ckpt / "config.json").read_text())
    rope = new.pop("rope_parameters")
    idxs = [i for i, t in enumerate(new.pop("layer_types")) if t == "full_attention"]
    old = {**new, "full_attn_idxs": idxs, "rope_theta": rope["rope_theta"],
           "block_ff_dim": new.pop("intermediate_size"), "block_dim": new["hidden_size"],
           "tie_embedding": new.pop("tie_word_embeddings")}
    old_model = LFM2ForCausalLM.from_pretrained(copy_ckpt(ckpt, tmp_path, config=old))
    torch.testing.assert_close(logits(old_model), logits(LFM2ForCausalLM.from_pretrained(ckpt)))


def test_bfloat16_load_is_close_to_float32(ckpt):
    f32 = LFM2ForCausalLM.from_pretrained(ckpt)
    bf16 = LFM2ForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.new_cache(1, 4).conv_states[0].dtype == torch.bfloat16
    ref, got = logits(f32), logits(bf16).float()
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


def test_tied_lm_head_in_checkpoint_is_accepted_only_when_equal(ckpt, tmp_path):
    tensors = load_file(ckpt / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    model = LFM2ForCausalLM.from_pretrained(copy_ckpt(ckpt, tmp_path / "ok", tensors))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="lm_head.weight"):
        LFM2ForCausalLM.from_pretrained(copy_ckpt(ckpt, tmp_path / "bad", tensors))


@pytest.mark.parametrize("edit, match", [
    pytest.param(lambda t: t.pop("model.layers.2.conv.conv.weight"),
                 "model.layers.2.conv.conv.weight", id="missing-conv-weight"),
    pytest.param(lambda t: t.update({"model.layers.1.self_attn.k_proj.weight":
                                     torch.zeros(8, 48)}),
                 "model.layers.1.self_attn.k_proj.weight", id="wrong-shape"),
    pytest.param(lambda t: t.update({"model.layers.0.conv.conv.bias": torch.zeros(48)}),
                 "model.layers.0.conv.conv.bias", id="unexpected-tensor"),
    pytest.param(lambda t: t.pop("model.embedding_norm.weight"),
                 "model.embedding_norm.weight", id="missing-final-norm"),
])
def test_broken_checkpoint_names_the_tensor(ckpt, tmp_path, edit, match):
    tensors = load_file(ckpt / "model.safetensors")
    edit(tensors)
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        LFM2ForCausalLM.from_pretrained(copy_ckpt(ckpt, tmp_path, tensors))


def test_bad_config_in_checkpoint_names_the_field(ckpt, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["layer_types"][1] = "sliding_attention"
    with pytest.raises(ValueError, match="layer_types"):
        LFM2ForCausalLM.from_pretrained(copy_ckpt(ckpt, tmp_path, config=cfg))
    with pytest.raises(ValueError, match="model.safetensors"):
        LFM2ForCausalLM.from_pretrained(tmp_path / "nothing-here")


def test_tokenizer_json_is_used_when_present(ckpt, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(101)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = copy_ckpt(ckpt, tmp_path)
    tok.save(str(path / "tokenizer.json"))
    model = LFM2ForCausalLM.from_pretrained(path)
    assert model.tokenizer.encode("w5 w7 w99") == [5, 7, 99]
    assert model.tokenizer.decode([5, 7]) == "w5 w7"
    assert (model.tokenizer.eos_token_id, model.tokenizer.bos_token_id) == (2, 1)


def test_byte_tokenizer_round_trips_text():
    tok = ByteTokenizer(PRESETS["lfm2-demo"])
    ids = tok.encode("héllo, wörld ✓")
    assert ids[0] == tok.bos_token_id and all(0 <= i < 256 for i in ids[1:])
    assert tok.decode(ids + [tok.eos_token_id]) == "héllo, wörld ✓"
    assert tok.decode([0xE2, 0x9C]) == "\ufffd"  # a cut multi-byte char does not raise


@pytest.fixture(scope="module")
def demo():
    return LFM2ForCausalLM.from_preset("lfm2-demo", seed=0)


def test_demo_preset_is_seeded_and_generates(demo):
    assert demo.config is PRESETS["lfm2-demo"] and demo.config.hidden_size >= 1024
    again = LFM2ForCausalLM.from_preset("lfm2-demo", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(demo.parameters(), again.parameters()))
    prompt = demo.tokenizer.encode("hello")
    out = demo.generate([prompt], max_new_tokens=4, stop_token_ids=[demo.tokenizer.eos_token_id])
    assert 1 <= len(out[0]) <= 4 and isinstance(demo.tokenizer.decode(out[0]), str)
    lg = demo.next_token_logits(torch.tensor([prompt]))
    assert lg.dtype == torch.float32 and lg.shape == (1, demo.config.vocab_size)
    assert torch.isfinite(lg).all() and lg.std() > 0
    with pytest.raises(ValueError, match="lfm2-demo"):
        LFM2ForCausalLM.from_preset("lfm2-huge")
