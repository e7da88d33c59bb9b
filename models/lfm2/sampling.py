"""Sampling a next token from logits: greedy, or temperature / top-k / top-p / min-p in
transformers' order, for one setting (sample_next) or a batch of rows each with its own
(sample_batch: what generate() and the continuous batch sample a decode step with).

Computed in float64, shifted so each row's largest logit is 0 before dividing by its
temperature: any temperature > 0 (even 1e-300, which is 0 in float32) sends the others towards
-inf (greedy in the limit) instead of making NaN probabilities. A batch is filtered in one pass
of each op (per-row settings as (R, 1) columns) and drawn with one random number per row from
that row's generator, so a row gets the token it gets alone, whatever else shares its step:
one pass of some ten ops for the step, where a loop over rows launched them once per row (on
a GPU, some ten kernels per sampled row and token).
"""
from __future__ import annotations

import math

import torch

NUCLEUS_CANDIDATES = 256   # most likely tokens top_p looks among first on CPU (a model's nucleus is rarely wider)
# On CPU a step's rows go through in chunks of about this many logits (1 MiB in float64): the
# ten-odd passes over a chunk stay in cache, where 16 rows of LFM2's 65536 at once (8 MiB) were
# slower than one row at a time (benchmarks/results/sampling-cpu.md).
CPU_CHUNK_ELEMENTS = 1 << 17
_NEG_INF = float("-inf")


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None,
                min_p: float | None = None):
    """logits (B, V) float -> (B,) int64 with one setting for every row (one generator, its
    numbers drawn in row order). temperature 0 = greedy (argmax). Filters in transformers'
    order: temperature, top_k, top_p, then min_p (drop a token whose probability is below
    min_p times the most likely one's)."""
    b = logits.shape[0]
    return sample_batch(logits, [temperature] * b, [top_k] * b, [top_p] * b, [min_p] * b, generator)


def sample_batch(logits: torch.Tensor, temperatures, top_ks, top_ps, min_ps, generators) -> torch.Tensor:
    """logits (R, V) float -> (R,) int64: row i greedy when temperatures[i] is 0, else sampled
    with top_ks[i] / top_ps[i] / min_ps[i] (None: off) and generators[i] (a list, one per row,
    or one generator for all rows)."""
    rows, vocab = logits.shape
    out = logits.argmax(-1)
    hot = [i for i in range(rows) if temperatures[i] != 0.0]
    if not hot:
        return out
    step = max(1, CPU_CHUNK_ELEMENTS // vocab) if logits.device.type == "cpu" else len(hot)
    for start in range(0, len(hot), step):
        part = hot[start:start + step]
        every = len(part) == rows                 # the whole step sampled at once: no gather/scatter
        idx = None if every else torch.tensor(part, device=logits.device)
        picked = _sample_rows(logits if every else logits[idx], [temperatures[i] for i in part],
                              [top_ks[i] for i in part], [top_ps[i] for i in part], [min_ps[i] for i in part],
                              [generators[i] for i in part] if isinstance(generators, (list, tuple)) else generators)
        if every:
            return picked
        out[idx] = picked
    return out


def _sample_rows(logits: torch.Tensor, temperatures, top_ks, top_ps, min_ps, generators) -> torch.Tensor:
    """sample_batch's sampled rows, every one with a temperature > 0: logits (R, V) -> (R,)."""
    vocab, dev = logits.shape[-1], logits.device
    column = lambda values: torch.tensor(values, dtype=torch.float64, device=dev).unsqueeze(1)   # noqa: E731
    x = logits.double()                                                     # (R, V)
    x = (x - x.max(-1, keepdim=True).values) / column(temperatures)
    ks = [k if k is not None and k < vocab else None for k in top_ks]
    if any(k is not None for k in ks):
        k_max = max(k for k in ks if k is not None)
        top = x.topk(k_max, dim=-1).values                                   # (R, k_max)
        kth = top.gather(1, torch.tensor([(k or k_max) - 1 for k in ks], device=dev).unsqueeze(1))
        limited = torch.tensor([k is not None for k in ks], device=dev).unsqueeze(1)
        x = x.masked_fill(limited & (x < kth), _NEG_INF)
    ps = [p if p is not None and p < 1.0 else None for p in top_ps]
    nucleus_rows = [r for r, p in enumerate(ps) if p is not None]
    if nucleus_rows:
        if len(nucleus_rows) == len(ps):
            x = nucleus(x, column(ps))
        else:
            sub = torch.tensor(nucleus_rows, device=dev)
            x[sub] = nucleus(x[sub], column([ps[r] for r in nucleus_rows]))
    floors = list(min_ps)
    if any(floors):
        # The largest logit is 0 here (shifted above; top-k/top-p keep it), so p_j < min_p * p_max
        # is logit_j < log(min_p): the most likely token always stays.
        x = x.masked_fill(x < column([math.log(m) if m else _NEG_INF for m in floors]), _NEG_INF)
    return draw(x.softmax(-1), generators)


def nucleus(logits: torch.Tensor, top_p) -> torch.Tensor:
    """logits (B, V), top_p a float or a (B, 1) column -> the same with -inf for every token
    outside the row's top_p nucleus: a token is dropped when the tokens more likely than it
    already hold top_p of the mass (the most likely one always stays). On CPU, at a large vocabulary, it is looked for among the
    NUCLEUS_CANDIDATES most likely tokens first (a topk, where sorting LFM2's 65536 was most of
    a sampled step: benchmarks/results/sampling-cpu.md), and over the whole sorted row only
    when those hold less than top_p: the candidates are a prefix of the sorted row, so the
    same of them stay. Elsewhere the row is sorted: a GPU sorts it in microseconds, and the
    candidates' check would wait for the device (a host sync per row and step)."""
    if logits.device.type == "cpu" and logits.shape[-1] > 4 * NUCLEUS_CANDIDATES:
        top, order = logits.topk(NUCLEUS_CANDIDATES, dim=-1)              # (B, k), descending
        probs = (top - logits.logsumexp(-1, keepdim=True)).exp()          # of the whole row
        running = probs.cumsum(-1)
        if bool((running[:, -1:] >= top_p).all()):                        # every token after: dropped
            return _keep(logits, top, order, running - probs >= top_p)
    return sorted_nucleus(logits, top_p)


def sorted_nucleus(logits: torch.Tensor, top_p) -> torch.Tensor:
    """nucleus over the whole sorted row (a GPU's path, the CPU's fallback)."""
    top, order = logits.sort(dim=-1, descending=True)
    probs = top.softmax(-1)
    return _keep(logits, top, order, probs.cumsum(-1) - probs >= top_p)


def _keep(logits, top, order, drop) -> torch.Tensor:
    """-inf but at the sorted tokens `top` (at `order`) that drop does not mark; the first stays
    whatever top_p rounds to in the logits' dtype."""
    drop[..., 0] = False
    return torch.full_like(logits, float("-inf")).scatter(-1, order, top.masked_fill(drop, float("-inf")))


def draw(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """probs (B, V) -> (B,): one token per row by inverse CDF, a uniform in [0, row total)
    located in the row's running sum (right-bisected, so a token of probability 0 is never
    drawn). One random number per row, where torch.multinomial draws one per token: at LFM2's
    65536-token vocabulary that draw was most of a sampled step's host time
    (benchmarks/results/sampling-cpu.md). generator: one for every row (its numbers in row
    order), or a list with each row's own."""
    running = probs.cumsum(-1)                                             # (B, V)
    like = dict(dtype=probs.dtype, device=probs.device)
    if isinstance(generator, (list, tuple)):
        u = torch.cat([torch.rand(1, 1, generator=g, **like) for g in generator])
    else:
        u = torch.rand(probs.shape[0], 1, generator=generator, **like)
    u = u * running[:, -1:]                                                # (B, 1) in [0, total)
    return torch.searchsorted(running, u, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(1)


