"""Checkpoints as they turn up on disk, beside the ones transformers writes: renamed tensors,
a missing untied head, a tied head stored under lm_head.weight, a stale shard index, bf16
weights, the stop ids of generation_config.json. Each is checked against transformers'
Lfm2ForCausalLM read from the same directory."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from models.lfm2 import LFM2ForCausalLM  # noqa: E402
from test_lfm2 import make_hf, rand_ids  # noqa: E402

from hf_reference import assert_logits_match  # noqa: E402


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_tied")
    return make_hf(path, seed=21), path


def _with_tensors(src, dst, tensors):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_renamed_tensors_are_listed_from_both_sides(tied, tmp_path):
    """A checkpoint saved from a wrapper (PEFT's base_model.model.) holds every tensor under
    another name: the error shows a few names missing and a few the checkpoint has instead,
    so the prefix is visible, not just the first missing name."""
    _, src = tied
    tensors = {"base_model.model." + k: v for k, v in load_file(src / "model.safetensors").items()}
    with pytest.raises(ValueError) as err:
        LFM2ForCausalLM.from_pretrained(_with_tensors(src, tmp_path / "renamed", tensors))
    msg = str(err.value)
    n = len(tensors)
    assert f"missing {n} tensors" in msg and "'model.embed_tokens.weight'" in msg, msg
    assert f"{n} unexpected tensors" in msg and "'base_model.model.model.embed_tokens.weight'" in msg, msg


def test_untied_config_without_lm_head_says_which_setting(tmp_path):
    """transformers initialises a missing lm_head randomly; we refuse, and say that a head
    sharing the embedding is tie_word_embeddings=true."""
    src = tmp_path / "untied"
    make_hf(src, seed=22, tie_word_embeddings=False)
    tensors = load_file(src / "model.safetensors")
    del tensors["lm_head.weight"]
    with pytest.raises(ValueError, match=r"'lm_head\.weight'.*tie_word_embeddings"):
        LFM2ForCausalLM.from_pretrained(_with_tensors(src, tmp_path / "no_head", tensors))


def test_tied_head_stored_only_as_lm_head_loads_like_transformers(tied, tmp_path):
    """safetensors' save_model keeps one name per shared tensor, the first sorted:
    lm_head.weight, not model.embed_tokens.weight. transformers ties from either side."""
    hf, src = tied
    tensors = load_file(src / "model.safetensors")
    tensors["lm_head.weight"] = tensors.pop("model.embed_tokens.weight")
    path = _with_tensors(src, tmp_path / "head_only", tensors)
    ref = transformers.Lfm2ForCausalLM.from_pretrained(path).eval()
    ours = LFM2ForCausalLM.from_pretrained(path)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert_logits_match(ref, ours, rand_ids(2, 7, seed=4), tol=0)


def test_index_that_leaves_out_a_stored_tensor_says_the_index_is_stale(tied, tmp_path):
    hf, _ = tied
    path = tmp_path / "sharded"
    hf.save_pretrained(path, max_shard_size="20KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = list(index["weight_map"].values())
    name = next(n for n, f in index["weight_map"].items() if shards.count(f) > 1)   # its shard stays named
    shard = index["weight_map"].pop(name)
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError) as err:
        LFM2ForCausalLM.from_pretrained(path)
    msg = str(err.value)
    assert name in msg and shard in msg and "None" not in msg, msg
    assert "does not list" in msg and "regenerate" in msg, msg


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="bf16-to-fp32"),
                                   pytest.param(torch.bfloat16, id="bf16-to-bf16")])
def test_bf16_weights_load_like_transformers(tmp_path, dtype):
    """config.json says dtype bfloat16 and the tensors are bf16: loaded to the dtype asked for,
    with transformers' logits in that dtype (fp32 exactly: bf16 -> fp32 is exact)."""
    make_hf(tmp_path, seed=23).to(torch.bfloat16).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()).get("dtype") == "bfloat16"
    ref = transformers.Lfm2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ours = LFM2ForCausalLM.from_pretrained(tmp_path, dtype=dtype)
    assert {p.dtype for p in ours.parameters()} == {dtype}
    ids = rand_ids(2, 7, seed=5)
    if dtype == torch.float32:
        assert_logits_match(ref, ours, ids, tol=0)
    else:   # bf16 arithmetic: within bf16 noise of the fp32 reference
        with torch.no_grad():
            want = ref(ids, use_cache=False).logits
        with torch.inference_mode():
            got = ours(ids).float()
        assert (got - want).abs().max() < 0.1 * want.abs().max()


def _generation_config(path, **fields):
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "pad_token_id": 0, **fields}))


def test_generation_config_eos_ids_are_the_stop_ids(tied, tmp_path):
    """transformers' generate stops at generation_config.json's eos_token_id (which may list
    several, e.g. an end-of-turn token) rather than config.json's; so do we."""
    _, src = tied
    path = tmp_path / "gen"
    shutil.copytree(src, path)
    _generation_config(path, eos_token_id=[2, 5])
    ref = transformers.Lfm2ForCausalLM.from_pretrained(path)
    ours = LFM2ForCausalLM.from_pretrained(path)
    assert ours.config.eos_token_ids == tuple(ref.generation_config.eos_token_id) == (2, 5)
    _generation_config(path)                      # no eos there: config.json's stays
    assert LFM2ForCausalLM.from_pretrained(path).config.eos_token_ids == (2,)


@pytest.mark.parametrize("text, match", [
    pytest.param(json.dumps({"eos_token_id": [2, 500]}), r"generation_config\.json.*eos_token_id.*vocab_size",
                 id="out-of-vocab"),
    pytest.param(json.dumps({"eos_token_id": "</s>"}), r"generation_config\.json.*eos_token_id", id="text"),
    pytest.param("{not json", r"generation_config\.json.*JSON", id="not-json"),
])
def test_bad_generation_config_names_the_file(tied, tmp_path, text, match):
    _, src = tied
    path = tmp_path / "gen"
    shutil.copytree(src, path)
    (path / "generation_config.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        LFM2ForCausalLM.from_pretrained(path)
