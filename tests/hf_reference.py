"""transformers reference checkpoints for the LFM2-family tests (shared test helper).

A tiny transformers model with random weights everywhere (norms near 1, so they matter), saved
as a Hugging Face directory our loader reads; the comparison of our logits with its own.
"""
from __future__ import annotations

import pytest
import torch


def random_checkpoint(transformers, arch: str, config: dict, path, seed: int = 0, scale: float = 0.2):
    """transformers.<arch>ForCausalLM(<arch>Config(**config)), randomly initialised (norm weights
    1 + 0.2 N(0,1), other weights scale N(0,1), an expert bias 0.5 N(0,1)), saved to path.
    Skips the test when this transformers has no such model."""
    model_cls, config_cls = (getattr(transformers, f"{arch}{kind}", None) for kind in ("ForCausalLM", "Config"))
    if model_cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {arch}ForCausalLM")
    torch.manual_seed(seed)
    hf = model_cls(config_cls(**config)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else scale * torch.randn_like(p))
        for name, b in hf.named_buffers():
            if name.endswith("expert_bias"):
                b.copy_(0.5 * torch.randn_like(b))      # steers the pick away from the top scores
    hf.save_pretrained(path)
    return hf


def assert_logits_match(hf, ours, ids, tol: float = 1e-4) -> None:
    """Our logits for ids (B, L) equal the reference's (no cache on either side)."""
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    with torch.inference_mode():
        got = ours(ids)
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def assert_missing_tensor_is_named(path, name: str) -> None:
    """Drop `name` from the checkpoint at path: from_pretrained must refuse it naming the tensor."""
    import re

    from safetensors.torch import load_file, save_file

    from models.lfm2 import LFM2ForCausalLM
    tensors = load_file(path / "model.safetensors")
    del tensors[name]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(ValueError, match=re.escape(name)):
        LFM2ForCausalLM.from_pretrained(path)

