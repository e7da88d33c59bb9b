"""Strict loading of a local Hugging Face LFM2, LFM2-MoE or LFM3 directory (never downloads).

Reads config.json, then model.safetensors or the shards named by model.safetensors.index.json
(models/lfm2/checkpoint.py: names, shapes and dtypes from the headers). Every parameter must be
present with its exact shape and nothing else may be: the first problem found fails the load,
before any tensor data is read, with a message naming the tensor. The model is built in its
final dtype on its device and each tensor copied straight into its parameter, so the peak is
the model plus one tensor. With tied embeddings a checkpoint may still carry `lm_head.weight`;
it is accepted only if it equals the embedding, and it may carry the shared matrix only there.
The stop ids are generation_config.json's eos_token_id where it gives one, as in transformers,
and its sampling fields the model's generation_defaults (generation_config.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..placement import FLOAT_DTYPES, parse_device, parse_dtype
from . import generation_config
from .checkpoint import Checkpoint, Entry
from .config import LFM2Config


@dataclass(frozen=True)
class Stacked:
    """A parameter assembled from several stored tensors (LFM2-MoE's per-expert matrices):
    `parts` are (index into the parameter, stored tensor)."""
    shape: tuple[int, ...]
    parts: tuple[tuple[tuple, Entry], ...]

    @property
    def is_float(self) -> bool:
        return all(entry.is_float for _, entry in self.parts)


def load_pretrained(cls, path, device=None, dtype=None):
    """Build `cls` (LFM2ForCausalLM) from a local HF directory; device defaults to CPU, dtype
    to float32 (or "bfloat16", "float16", "float64", or the torch dtype)."""
    device, dtype = parse_device(device), parse_dtype(dtype, FLOAT_DTYPES)   # before any I/O
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory; expected a local Hugging Face LFM2 checkpoint "
                         "(config.json + model.safetensors)")
    generation = generation_config.read(path)
    where = str(path / generation_config.FILE)
    config = _with_generation_eos(LFM2Config.from_json(path / "config.json"), generation, where)
    defaults = generation_config.sampling_defaults(generation, where)
    with Checkpoint(path) as ckpt:
        sources = _tied_from_head(config, to_module_names(config, ckpt.entries))
        tokenizer = None
        if (path / "tokenizer.json").is_file():
            from .tokenizer import HFTokenizer
            tokenizer = HFTokenizer(path / "tokenizer.json", config)
        model = cls.empty(config, device=device, dtype=dtype, tokenizer=tokenizer)
        expected = dict(model.named_parameters())  # tied lm_head.weight is deduplicated away
        _check_names_and_shapes(config, expected, sources)
        with torch.no_grad():
            for name, p in expected.items():
                _copy_into(p, sources[name], ckpt)
            if config.tie_word_embeddings and "lm_head.weight" in sources:
                _check_tied_head(ckpt.load(sources["lm_head.weight"]), expected["model.embed_tokens.weight"])
    model.to(dtype=dtype).tie_weights()   # buffers (RoPE's inv_freq) follow the dtype, as ever
    model.generation_defaults = defaults
    return model.eval()


def _with_generation_eos(config: LFM2Config, generation: dict, where: str) -> LFM2Config:
    """config with generation_config.json's eos_token_id, when it gives one: transformers'
    generate stops at those ids, not config.json's, and a checkpoint may list several there
    (an end-of-turn token beside the end of text) that config.json does not. The server stops
    at config.eos_token_ids, so they belong in the config."""
    eos = generation.get("eos_token_id")
    if eos is None:
        return config
    try:
        return config.replace(eos_token_id=tuple(eos) if isinstance(eos, list) else eos)
    except ValueError as e:
        raise ValueError(f"{where}: {e}; fix eos_token_id there") from None


def _copy_into(p: torch.Tensor, source, ckpt: Checkpoint) -> None:
    """Read the stored tensor(s) of `source` one at a time into parameter p (cast on copy)."""
    if isinstance(source, Entry):
        p.copy_(ckpt.load(source))
        return
    for index, entry in source.parts:
        p[index].copy_(ckpt.load(entry))


def _check_tied_head(head: torch.Tensor, embedding: torch.Tensor) -> None:
    """The stored lm_head must equal the embedding (already copied, in the model's dtype):
    compared after the same cast, as the model would hold it."""
    if head.shape != embedding.shape or not torch.equal(head.to(device=embedding.device, dtype=embedding.dtype),
                                                        embedding):
        raise ValueError("tensor 'lm_head.weight' differs from model.embed_tokens.weight but "
                         "tie_word_embeddings=True; set tie_word_embeddings=false in config.json")


def _tied_from_head(config: LFM2Config, sources: dict) -> dict:
    """A tied checkpoint that stores the shared matrix only as lm_head.weight (safetensors'
    save_model keeps the first sorted name of a shared tensor, and that is lm_head's) loads it
    as the embedding, as transformers ties from either side."""
    embed, head = "model.embed_tokens.weight", "lm_head.weight"
    if config.tie_word_embeddings and embed not in sources and head in sources:
        sources = dict(sources)
        sources[embed] = sources.pop(head)
    return sources


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
    transformers merges them: each expert's matrices are copied into their slices at load, never
    stacked in memory. A checkpoint already holding the stacked names passes through."""
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
        gate_up = [((e, slice(0, width)), take(e, "w1")) for e in experts] + \
                  [((e, slice(width, 2 * width)), take(e, "w3")) for e in experts]        # [w1; w3] per expert
        out[f"{prefix}.gate_up_proj"] = Stacked((config.num_experts, 2 * width, hidden), tuple(gate_up))
        out[f"{prefix}.down_proj"] = Stacked((config.num_experts, hidden, width),
                                             tuple(((e,), take(e, "w2")) for e in experts))
        if mats:
            e, w = sorted(mats)[0]
            raise ValueError(f"unexpected tensor '{prefix}.{e}.{w}.weight': config.json has "
                             f"num_experts={config.num_experts}")
    return out


def _check_names_and_shapes(config: LFM2Config, expected: dict, sources: dict):
    """Every parameter stored with its shape as a float, nothing else; from the headers only.
    Names are checked first, all at once: a checkpoint saved from a wrapper (PEFT's
    `base_model.model.`) or with a prefix stripped misses every name and has every one
    extra, and only both lists side by side show it."""
    tied_head = config.tie_word_embeddings and "lm_head.weight" in sources
    missing = [name for name in expected if name not in sources]
    extra = sorted(set(sources) - set(expected) - ({"lm_head.weight"} if tied_head else set()))
    if missing or extra:
        raise ValueError(_names_message(expected, missing, extra))
    for name, p in expected.items():
        if tuple(sources[name].shape) != tuple(p.shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(sources[name].shape)}, expected "
                             f"{tuple(p.shape)} from config.json")
        if not sources[name].is_float:
            dtype = sources[name].dtype if isinstance(sources[name], Entry) else "not float"
            raise ValueError(f"tensor {name!r} has dtype {dtype}; expected a float")


def _few(names, shapes=None, n: int = 3) -> str:
    """The first n names (with their shapes if given), then '...' if there are more."""
    shown = [f"{x!r}" + (f" {tuple(shapes[x].shape)}" if shapes else "") for x in names[:n]]
    return ", ".join(shown) + (", ..." if len(names) > n else "")


def _names_message(expected: dict, missing: list, extra: list) -> str:
    """What the checkpoint lacks and what it has instead, a few of each, and the likely fix."""
    parts = []
    if missing:
        parts.append(f"checkpoint is missing {len(missing)} tensor{'s' * (len(missing) > 1)} this "
                     f"config.json needs: {_few(missing, expected)}")
    if extra:
        parts.append(f"{'it' if missing else 'checkpoint'} has {len(extra)} unexpected "
                     f"tensor{'s' * (len(extra) > 1)}: {_few(extra)}")
    if missing == ["lm_head.weight"] and not extra:
        hint = ("tie_word_embeddings is false; set it to true in config.json if the output head "
                "shares the embedding matrix")
    elif missing and extra:
        hint = "tensor names differ (a prefix added or stripped?); rename them to transformers' Lfm2 names"
    elif missing:
        hint = "is config.json the one that belongs to these weights?"
    else:
        hint = "they do not belong to an LFM2 of this config; is config.json the one for these weights?"
    return "; ".join(parts) + "; " + hint
