"""Strict loading of a local Hugging Face LFM2, LFM2-MoE or LFM3 directory (never downloads).

Reads config.json, then model.safetensors or the shards named by model.safetensors.index.json.
Every parameter must be present with its exact shape and nothing else may be: the first
problem found fails the load with a message naming the tensor. With tied embeddings a
checkpoint may still carry `lm_head.weight`; it is accepted only if it equals the embedding.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .config import LFM2Config

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint in `path`, on CPU, by name."""
    from safetensors.torch import load_file
    if (path / INDEX).is_file():
        try:
            weight_map = json.loads((path / INDEX).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path / INDEX} must be JSON with a 'weight_map' object: {e}") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise ValueError(f"{INDEX} names shard {shard!r}, which is not in {path}")
            for name, t in load_file(str(path / shard)).items():
                if name in tensors:
                    raise ValueError(f"tensor {name!r} appears in more than one shard")
                if weight_map.get(name) != shard:
                    raise ValueError(f"tensor {name!r} is in {shard} but {INDEX} puts it in "
                                     f"{weight_map.get(name)!r}")
                tensors[name] = t
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ValueError(f"{INDEX} lists tensor {missing[0]!r} but no shard holds it")
        return tensors
    if (path / SINGLE).is_file():
        return load_file(str(path / SINGLE))
    raise ValueError(f"no weights in {path}: expected {SINGLE} or {INDEX} (sharded)")


def load_pretrained(cls, path, device=None, dtype=None):
    """Build `cls` (LFM2ForCausalLM) from a local HF directory; dtype defaults to float32."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory; expected a local Hugging Face LFM2 checkpoint "
                         "(config.json + model.safetensors)")
    config = LFM2Config.from_json(path / "config.json")
    tensors = read_checkpoint(path)
    tokenizer = None
    if (path / "tokenizer.json").is_file():
        from .tokenizer import HFTokenizer
        tokenizer = HFTokenizer(path / "tokenizer.json", config)
    model = cls.empty(config, device=device, tokenizer=tokenizer)
    tensors = to_module_names(config, tensors)
    expected = dict(model.named_parameters())  # tied lm_head.weight is deduplicated away
    _check_names_and_shapes(config, expected, tensors)
    dtype = dtype or torch.float32
    with torch.no_grad():
        for name, p in expected.items():
            p.copy_(tensors[name])
    model.to(dtype=dtype).tie_weights()
    return model.eval()


# LFM3 checkpoints name three attention tensors as Qwen3 does; the module keeps LFM2's names
# (one Attention for both). transformers calls the gate g_proj in memory, gate_proj on disk.
_LFM3_NAMES = {".self_attn.o_proj.": ".self_attn.out_proj.",
               ".self_attn.q_norm.": ".self_attn.q_layernorm.",
               ".self_attn.k_norm.": ".self_attn.k_layernorm.",
               ".self_attn.g_proj.": ".self_attn.gate_proj."}


_EXPERT = re.compile(r"^(.*\.feed_forward\.experts)\.(\d+)\.(w1|w2|w3)\.weight$")


def to_module_names(config: LFM2Config, tensors: dict) -> dict:
    """Checkpoint tensors by name -> LFM2ForCausalLM's parameters by name: LFM3's three
    attention names mapped, LFM2-MoE's per-expert matrices stacked."""
    if config.model_type == "lfm2_moe":
        return _stack_experts(config, tensors)
    if config.model_type != "lfm3":
        return tensors
    out = {}
    for name, t in tensors.items():
        for theirs, ours in _LFM3_NAMES.items():
            name = name.replace(theirs, ours)
        if name in out:
            raise ValueError(f"checkpoint holds tensor {name!r} under two names")
        out[name] = t
    return out


def _stack_experts(config: LFM2Config, tensors: dict) -> dict:
    """`...experts.{e}.w1/w3/w2.weight` ((I, H), (I, H), (H, I); how LFM2-MoE checkpoints are
    published) -> `...experts.gate_up_proj` (E, 2I, H) and `...experts.down_proj` (E, H, I), as
    transformers merges them. A checkpoint already holding the stacked names passes through."""
    out, per_layer = {}, {}
    hidden, width = config.hidden_size, config.moe_intermediate_size
    for name, t in tensors.items():
        m = _EXPERT.match(name)
        if m:
            per_layer.setdefault(m[1], {})[(int(m[2]), m[3])] = t
        else:
            out[name] = t
    for prefix, mats in per_layer.items():
        def take(e, w):
            if (e, w) not in mats:
                raise ValueError(f"checkpoint is missing tensor '{prefix}.{e}.{w}.weight' "
                                 f"({config.num_experts} experts per MoE layer in config.json)")
            t, want = mats.pop((e, w)), (width, hidden) if w != "w2" else (hidden, width)   # w1, w3: (I, H)
            if tuple(t.shape) != want:
                raise ValueError(f"tensor '{prefix}.{e}.{w}.weight' has shape {tuple(t.shape)}, expected "
                                 f"{want} from config.json (hidden_size, moe_intermediate_size)")
            return t
        experts = range(config.num_experts)
        out[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([take(e, "w1"), take(e, "w3")]) for e in experts])
        out[f"{prefix}.down_proj"] = torch.stack([take(e, "w2") for e in experts])
        if mats:
            e, w = sorted(mats)[0]
            raise ValueError(f"unexpected tensor '{prefix}.{e}.{w}.weight': config.json has "
                             f"num_experts={config.num_experts}")
    return out


def _check_names_and_shapes(config: LFM2Config, expected: dict, tensors: dict):
    tied_head = config.tie_word_embeddings and "lm_head.weight" in tensors
    for name, p in expected.items():
        if name not in tensors:
            raise ValueError(f"checkpoint is missing tensor {name!r} (shape {tuple(p.shape)}); "
                             "is config.json the one that belongs to these weights?")
        if tuple(tensors[name].shape) != tuple(p.shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected "
                             f"{tuple(p.shape)} from config.json")
        if tensors[name].is_floating_point() is False:
            raise ValueError(f"tensor {name!r} has dtype {tensors[name].dtype}; expected a float")
    extra = sorted(set(tensors) - set(expected) - ({"lm_head.weight"} if tied_head else set()))
    if extra:
        raise ValueError(f"unexpected tensor {extra[0]!r} in checkpoint ({len(extra)} in all); "
                         "it does not belong to an LFM2 of this config")
    if tied_head:
        emb = tensors["model.embed_tokens.weight"]
        if tensors["lm_head.weight"].shape != emb.shape or \
                not torch.equal(tensors["lm_head.weight"], emb):
            raise ValueError("tensor 'lm_head.weight' differs from model.embed_tokens.weight but "
                             "tie_word_embeddings=True; set tie_word_embeddings=false in config.json")
