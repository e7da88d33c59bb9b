"""LFM2: the hybrid gated-short-conv / GQA language model, matching transformers' Lfm2ForCausalLM.

    model = LFM2ForCausalLM.from_preset("lfm2-demo")          # seeded weights, byte tokenizer
    model = LFM2ForCausalLM.from_pretrained("/path/to/LFM2-350M")   # local HF dir, strict
    model.generate([model.tokenizer.encode("hello")], max_new_tokens=16)
    engine = model.continuous_batch(capacity=16, max_length=2048)   # sequences join and leave
    engine.add(Sequence(ids, max_new_tokens=16)); engine.step()       # between decode steps

The short convs run through `models.depthwise.short_conv_block`, so `use_impl(...)` picks
the depthwise implementation for every call inside it.
"""
from .cache import LFM2Cache, StaticCache
from .config import LAYER_TYPES, PRESETS, LFM2Config
from .continuous import ContinuousBatch, Sequence
from .model import LFM2ForCausalLM, LFM2Model
from .tokenizer import ByteTokenizer, HFTokenizer

__all__ = ["LFM2Config", "LFM2ForCausalLM", "LFM2Model", "LFM2Cache", "StaticCache", "PRESETS", "LAYER_TYPES",
           "ByteTokenizer", "HFTokenizer", "ContinuousBatch", "Sequence"]
