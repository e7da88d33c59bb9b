"""Log-probabilities of given tokens: what a generated token's logprobs report (continuous.py)
and prompt scoring, each prompt token's log-probability given the tokens before it (OpenAI's
`echo` with `logprobs`, the loglikelihood evaluation harnesses ask for).

Log-probabilities are of the model's raw distribution (log_softmax of the logits in float32):
before temperature, top-k/top-p, penalties or logit_bias.
"""
from __future__ import annotations

import torch

Entry = tuple[float, list[tuple[int, float]]]   # (logprob of the token, [(token, logprob)] * k)
# Padded tokens per shared scoring forward. Batching pays where a forward's fixed cost dominates
# (short prompts: ~1.8x at 16-32 tokens); past ~1k tokens a wider batch only adds padding and
# cache misses (4096 was 0.75-0.9x of one forward per prompt at 64-512 tokens on 2 CPU cores,
# benchmarks/prompt_scoring.py).
BATCH_TOKENS = 1024


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top: list[int]) -> list[Entry]:
    """logits (N, V), tokens (N,) -> per row the token's log-probability and the row's `top[i]`
    most likely tokens with theirs; one log_softmax for all rows."""
    lp = torch.log_softmax(logits.float(), dim=-1)                              # (N, V)
    chosen = lp.gather(1, tokens[:, None].to(lp.device))[:, 0].tolist()
    k = max(top, default=0)
    top_v, top_i = lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long())
    top_v, top_i = top_v.tolist(), top_i.tolist()
    return [(chosen[j], list(zip(top_i[j][:kk], top_v[j][:kk]))) for j, kk in enumerate(top)]


def prompt_logprobs(model, ids: list[int], top: int = 0, chunk: int = 256) -> list[Entry]:
    """ids (L tokens) -> L-1 entries, for t = 1..L-1: log p(ids[t] | ids[:t]) and the `top` most
    likely tokens at t (prompts_logprobs of one prompt)."""
    return prompts_logprobs(model, [ids], top, chunk)[0]


def scoring_groups(prompts: list[list[int]], batch_tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """The prompts (indices) that prompts_logprobs scores in one forward each: longest first,
    each group at most `batch_tokens` once left-padded (a longer prompt alone); prompts of
    fewer than 2 tokens have nothing to score and are in none."""
    order = sorted((i for i, p in enumerate(prompts) if len(p) >= 2), key=lambda i: -len(prompts[i]))
    groups = []
    while order:
        take = max(1, batch_tokens // len(prompts[order[0]]))
        groups.append(order[:take])
        order = order[take:]
    return groups


@torch.inference_mode()
def prompts_logprobs(model, prompts: list[list[int]], top: int = 0, chunk: int = 256,
                     batch_tokens: int = BATCH_TOKENS) -> list[list[Entry]]:
    """Each prompt's prompt_logprobs, the prompts left-padded together into cache-less forwards
    of at most `batch_tokens` (padded) tokens each, longest first (32 prompts of 16-32 tokens:
    one forward, not 32; see BATCH_TOKENS). The
    (L, V) logits are made `chunk` rows at a time (a 2048-token prompt over a 65536 vocabulary
    would be 512 MiB at once)."""
    out: list[list[Entry]] = [[] for _ in prompts]
    for group in scoring_groups(prompts, batch_tokens):
        width = len(prompts[group[0]])
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, i in enumerate(group):                                         # left padding
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        h = model.hidden_states(ids, mask if len(group) > 1 else None)          # (B, width, C)
        for row, i in enumerate(group):
            n = len(prompts[i])
            hs, targets = h[row, width - n:-1], ids[row, width - n + 1:]        # predict ids[1 ..]
            for s in range(0, n - 1, chunk):
                rows = hs[s:s + chunk]
                out[i] += token_logprobs(model.lm_head(rows), targets[s:s + rows.shape[0]], [top] * rows.shape[0])
    return out
