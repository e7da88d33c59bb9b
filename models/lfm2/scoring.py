"""Log-probabilities of given tokens: what a generated token's logprobs report (continuous.py)
and prompt scoring, each prompt token's log-probability given the tokens before it (OpenAI's
`echo` with `logprobs`, the loglikelihood evaluation harnesses ask for).

Log-probabilities are of the model's raw distribution (log_softmax of the logits in float32):
before temperature, top-k/top-p, penalties or logit_bias.
"""
from __future__ import annotations

import torch

Entry = tuple[float, list[tuple[int, float]]]   # (logprob of the token, [(token, logprob)] * k)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top: list[int]) -> list[Entry]:
    """logits (N, V), tokens (N,) -> per row the token's log-probability and the row's `top[i]`
    most likely tokens with theirs; one log_softmax for all rows."""
    lp = torch.log_softmax(logits.float(), dim=-1)                              # (N, V)
    chosen = lp.gather(1, tokens[:, None].to(lp.device))[:, 0].tolist()
    k = max(top, default=0)
    top_v, top_i = lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long())
    top_v, top_i = top_v.tolist(), top_i.tolist()
    return [(chosen[j], list(zip(top_i[j][:kk], top_v[j][:kk]))) for j, kk in enumerate(top)]


@torch.inference_mode()
def prompt_logprobs(model, ids: list[int], top: int = 0, chunk: int = 256) -> list[Entry]:
    """ids (L tokens) -> L-1 entries, for t = 1..L-1: log p(ids[t] | ids[:t]) and the `top` most
    likely tokens at t. One cache-less forward; the (L, V) logits are made `chunk` rows at a
    time (a 2048-token prompt over a 65536 vocabulary would be 512 MiB at once)."""
    if len(ids) < 2:
        return []
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    h = model.hidden_states(x)[0]                                               # (L, C)
    targets = x[0, 1:]
    out: list[Entry] = []
    for s in range(0, len(ids) - 1, chunk):
        rows = h[s:s + chunk][: len(ids) - 1 - s]                               # predict ids[s+1 ..]
        out += token_logprobs(model.lm_head(rows), targets[s:s + rows.shape[0]], [top] * rows.shape[0])
    return out
