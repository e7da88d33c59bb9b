"""Per-sequence logit adjustments of the continuous batch, as OpenAI defines them:

    logits[j] -= presence_penalty * (count[j] > 0) + frequency_penalty * count[j]
    logits[j] += logit_bias[j]

count[j]: how often token j was generated so far by this sequence (not the prompt). Applied
before greedy or sampled picking; logprobs stay those of the model's own distribution.
"""
from __future__ import annotations

import torch

PENALTY_RANGE = (-2.0, 2.0)
BIAS_RANGE = (-100.0, 100.0)
MAX_BIASED_TOKENS = 300     # logit_bias entries per sequence (applied at every step)


def check(seq, vocab_size: int) -> None:
    """ValueError naming what was expected, for a sequence's adjustment fields."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(seq, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not PENALTY_RANGE[0] <= value <= PENALTY_RANGE[1]:
            raise ValueError(f"{name} must be a number in [{PENALTY_RANGE[0]}, {PENALTY_RANGE[1]}], got {value!r}")
    if seq.logit_bias is not None and (not isinstance(seq.logit_bias, dict) or len(seq.logit_bias) > MAX_BIASED_TOKENS):
        raise ValueError(f"logit_bias: expected a map of at most {MAX_BIASED_TOKENS} token ids to biases")
    for token, bias in (seq.logit_bias or {}).items():
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise ValueError(f"logit_bias: token ids must be in [0, {vocab_size}), got {token!r}")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not BIAS_RANGE[0] <= bias <= BIAS_RANGE[1]:
            raise ValueError(f"logit_bias[{token}] must be a number in [{BIAS_RANGE[0]}, {BIAS_RANGE[1]}], got {bias!r}")


def adjusts(seq) -> bool:
    return bool(seq.presence_penalty or seq.frequency_penalty or seq.logit_bias)


def apply(seqs, logits: torch.Tensor) -> torch.Tensor:
    """logits (N, V), row i for seqs[i] -> the adjusted logits (float32; a copy when any row
    is adjusted, else the input)."""
    rows = [i for i, s in enumerate(seqs) if adjusts(s)]
    if not rows:
        return logits
    out = logits.float().clone()
    vocab = out.shape[-1]
    for i in rows:
        s = seqs[i]
        if (s.presence_penalty or s.frequency_penalty) and s.tokens:
            counts = torch.bincount(torch.tensor(s.tokens, device=out.device), minlength=vocab)[:vocab].float()
            out[i] -= s.presence_penalty * (counts > 0).float() + s.frequency_penalty * counts
        if s.logit_bias:
            ids = torch.tensor(list(s.logit_bias), device=out.device)
            out[i, ids] += torch.tensor(list(s.logit_bias.values()), device=out.device, dtype=out.dtype)
    return out
