"""Per-sequence logit adjustments of the continuous batch, in this order:

    logits[j] += logit_bias[j]
    logits[j] = logits[j] / r if logits[j] > 0 else logits[j] * r    for j in seen     (repetition_penalty r)
    logits[j] -= presence_penalty * (count[j] > 0) + frequency_penalty * count[j]
    logits[s] = -inf for every stop token s while fewer than min_tokens were generated
    logits[j] = -inf for every j not in allowed_token_ids, and the last id of every bad word
                 whose other ids end the generated tokens (token_masks.py)
    logits[j] = -inf for every j a structured output's grammar does not allow next (structured.py)

Where the masks leave no token at all, the grammar and allowed_token_ids win over min_tokens and
bad words, and the grammar over allowed_token_ids (a row with nothing to sample from would
fail the whole step).

The bias comes before the repetition penalty, which scales it too, as in vLLM's sampler (logit
bias, then repetition, frequency and presence penalties) and transformers' generate
(SequenceBiasLogitsProcessor before RepetitionPenaltyLogitsProcessor); the additive ones commute.

seen: the prompt's tokens and the generated ones (transformers' and vLLM's repetition
penalty: 1.0 off, > 1 discourages repeats); count[j]: how often token j was generated so far
(OpenAI's presence/frequency penalties count the completion only). Applied before greedy or
sampled picking; logprobs stay those of the model's own distribution.
"""
from __future__ import annotations

import torch

from . import token_masks

PENALTY_RANGE = (-2.0, 2.0)
REPETITION_RANGE = (0.0, 100.0)   # exclusive of 0: a factor that divides
BIAS_RANGE = (-100.0, 100.0)
MAX_BIASED_TOKENS = 300     # logit_bias entries per sequence (applied at every step)


def check_repetition_penalty(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not REPETITION_RANGE[0] < value <= REPETITION_RANGE[1]:
        raise ValueError(f"repetition_penalty must be a number in ({REPETITION_RANGE[0]:g}, {REPETITION_RANGE[1]:g}] "
                         f"(1.0 = off, > 1 discourages repeating the prompt's and generated tokens), got {value!r}")
    return float(value)


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V) float, seen (B, V) bool -> logits with each seen token's logit divided by
    penalty where positive and multiplied by it elsewhere (transformers' RepetitionPenalty-
    LogitsProcessor, vLLM's repetition_penalty): both push it down for penalty > 1. A tiny
    penalty divides a positive logit to at most the dtype's largest finite value, not +inf:
    sampling shifts by the largest logit, and inf - inf made NaN probabilities that raised on
    the scheduler thread, failing every generation in flight."""
    if penalty == 1.0:
        return logits
    divided = (logits / penalty).clamp(max=torch.finfo(logits.dtype).max)
    return torch.where(seen, torch.where(logits > 0, divided, logits * penalty), logits)


def seen_mask(rows: list[list[int]], vocab: int, device) -> torch.Tensor:
    """rows of token ids -> (len(rows), vocab) bool: row i marks the ids in rows[i]."""
    mask = torch.zeros(len(rows), vocab, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        if r:
            mask[i, torch.tensor(r, device=device)] = True
    return mask


def check(seq, vocab_size: int) -> None:
    """ValueError naming what was expected, for a sequence's adjustment fields."""
    check_repetition_penalty(seq.repetition_penalty)
    if isinstance(seq.min_tokens, bool) or not isinstance(seq.min_tokens, int) \
            or not 0 <= seq.min_tokens <= seq.max_new_tokens:
        raise ValueError(f"min_tokens must be an int in [0, max_new_tokens={seq.max_new_tokens}] (stop tokens are "
                         f"not generated before it), got {seq.min_tokens!r}")
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
    token_masks.check(seq, vocab_size)


def adjusts(seq) -> bool:
    return bool(seq.presence_penalty or seq.frequency_penalty or seq.logit_bias or seq.repetition_penalty != 1.0
                or (seq.stop_token_ids and len(seq.tokens) < seq.min_tokens)
                or getattr(seq, "constraint", None) is not None or token_masks.masks(seq))


def _seen(seq, vocab: int, device) -> torch.Tensor:
    """(1, V) bool: the tokens of seq's prompt and of what it generated so far; kept on the
    sequence and brought up to date with the tokens recorded since the last step."""
    if seq.seen is None:
        seq.seen, seq.seen_upto = seen_mask([seq.prompt], vocab, device), 0
    new = seq.tokens[seq.seen_upto:]
    if new:
        seq.seen[0, torch.tensor(new, device=device)] = True
        seq.seen_upto = len(seq.tokens)
    return seq.seen


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
        if s.logit_bias:
            ids = torch.tensor(list(s.logit_bias), device=out.device)
            out[i, ids] += torch.tensor(list(s.logit_bias.values()), device=out.device, dtype=out.dtype)
        if s.repetition_penalty != 1.0:
            out[i:i + 1] = penalize_repetition(out[i:i + 1], _seen(s, vocab, out.device), s.repetition_penalty)
        if (s.presence_penalty or s.frequency_penalty) and s.tokens:
            counts = torch.bincount(torch.tensor(s.tokens, device=out.device), minlength=vocab)[:vocab].float()
            out[i] -= s.presence_penalty * (counts > 0).float() + s.frequency_penalty * counts
        soft = list(s.stop_token_ids) if s.stop_token_ids and len(s.tokens) < s.min_tokens else []
        soft += token_masks.banned_now(s)
        if soft:
            out[i, torch.tensor(soft, device=out.device)] = float("-inf")
        hard = [m for m in (s.constraint.allowed(out.device) if getattr(s, "constraint", None) is not None else None,
                            token_masks.allowed_mask(s, vocab, out.device)) if m is not None]
        for allowed in hard:
            out[i].masked_fill_(~allowed, float("-inf"))
        if hard and not torch.isfinite(out[i]).any():
            out[i] = _fallback(out[i], logits[i].float(), hard)
    return out


def _fallback(adjusted: torch.Tensor, raw: torch.Tensor, hard: list[torch.Tensor]) -> torch.Tensor:
    """A row the masks left empty (V,): the adjustments without min_tokens and bad words, only
    the hard masks (grammar, then allowed_token_ids) on the raw logits, as many as leave a token."""
    for n in range(len(hard), 0, -1):
        keep = hard[0].clone()
        for m in hard[1:n]:
            keep &= m
        if keep.any():
            return raw.masked_fill(~keep, float("-inf"))
    return adjusted
