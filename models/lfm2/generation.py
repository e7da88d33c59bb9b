"""Batched generation for LFM2: left-padded prefill into a preallocated cache, then one
token per prompt per step (greedy, or sampled with temperature / top-k / top-p). Each row
samples with its own generator, row i seeded with seed + i, so a row gets the tokens it gets
alone (with that seed) whatever else shares its batch.

Invariants: the cache is allocated once (prompt length + max_new_tokens slots) and every
step writes one slot; a prompt that hit a stop token keeps being fed (its outputs are
ignored) so the batch stays rectangular; the stop token itself is the last one reported.

cuda_graph (decoding.py): None (default) decodes with a static cache replayed as a CUDA
graph when the model is on CUDA, eagerly elsewhere; False forces the eager dynamic path;
True requires the graph (ValueError off CUDA). Sampling runs outside the graph.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .decoding import open_decoder, use_cuda_graph


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None):
    """logits (B, V) float -> (B,) int64. temperature 0 = greedy (argmax)."""
    if temperature == 0.0:
        return logits.argmax(-1)
    # In float64, shifted so the largest logit is 0 before dividing: any temperature > 0 (even
    # 1e-300, which is 0 in float32) sends the others towards -inf (greedy in the limit)
    # instead of making NaN probabilities.
    logits = logits.double()
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]                  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already hold top_p of the mass (the
        # most likely one always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        drop[..., 0] = False             # whatever top_p rounds to in the logits' dtype
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def row_generators(b: int, seed: int | None, device) -> list[torch.Generator]:
    """One generator per row: row i seeded with seed + i (as OpenAI's n choices), fresh
    random seeds when seed is None. Rows drawing from one shared generator would interleave
    their draws, so a row's tokens would change with the other prompts in its batch."""
    gens = [torch.Generator(device=device) for _ in range(b)]
    for i, g in enumerate(gens):
        if seed is None:
            g.seed()
        else:
            g.manual_seed(int(seed) + i)
    return gens


def _sample_rows(logits, temperature, top_k, top_p, gens, done) -> torch.Tensor:
    """logits (B, V) -> (B,): greedy, or row i sampled with gens[i]. A finished row's token
    is never reported: it is taken greedily, leaving its generator alone."""
    if gens is None:
        return logits.argmax(-1)
    out = logits.argmax(-1)
    for i, g in enumerate(gens):
        if not done[i]:
            out[i] = sample_next(logits[i:i + 1], temperature, top_k, top_p, g)[0]
    return out


def check_generation_args(max_new_tokens, temperature, top_k, top_p, stop_token_ids, vocab):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    t = float(temperature)
    if not (t >= 0.0 and t != float("inf")):
        raise ValueError(f"temperature must be a finite float >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (0.0 < float(top_p) <= 1.0):
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
    stops = set()
    for s in stop_token_ids or ():
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < vocab:
            raise ValueError(f"stop_token_ids must be token ids in [0, {vocab}), got {s!r}")
        stops.add(s)
    return t, stops


def _as_rows(prompts, vocab: int) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.dtype.is_floating_point:
            raise ValueError(f"prompts tensor must be integer (batch, length), got {tuple(prompts.shape)}")
        prompts = prompts.tolist()
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists (or a (B, L) tensor)")
    rows = []
    for i, p in enumerate(prompts):
        if not isinstance(p, (list, tuple)) or not p:
            raise ValueError(f"prompt {i} must be a non-empty list of token ids "
                             "(start it with bos_token_id if there is no text)")
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in p):
            raise ValueError(f"prompt {i} must hold ints in [0, vocab_size={vocab})")
        rows.append(list(p))
    return rows


def stream_generate(model, prompts, max_new_tokens=32, temperature=0.0, top_k=None, top_p=None,
                    seed=None, stop_token_ids=(), cuda_graph=None) -> Iterator[list[int | None]]:
    cfg = model.config
    rows = _as_rows(prompts, cfg.vocab_size)   # validate now, not at the first next()
    temperature, stops = check_generation_args(max_new_tokens, temperature, top_k, top_p, stop_token_ids,
                                     cfg.vocab_size)
    use_cuda_graph(model, cuda_graph)          # cuda_graph=True off CUDA: raise now too
    return _steps(model, rows, max_new_tokens, temperature, top_k, top_p, seed, stops, cuda_graph)


def _steps(model, rows, max_new_tokens, temperature, top_k, top_p, seed, stops, cuda_graph):
    if max_new_tokens == 0:
        return
    dev = model.device
    b, width = len(rows), max(len(r) for r in rows)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros(b, width, dtype=torch.long)
    for i, r in enumerate(rows):                                     # left padding
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    gens = row_generators(b, seed, dev) if temperature != 0.0 else None
    done = [False] * b
    with open_decoder(model, b, width + max_new_tokens, cuda_graph) as decoder:
        logits = decoder.prefill(ids, mask)                              # (B, V) float32
        for step in range(max_new_tokens):
            with torch.inference_mode():
                nxt = _sample_rows(logits, temperature, top_k, top_p, gens, done)   # (B,)
            tokens = nxt.tolist()
            out: list[int | None] = []
            for i, t in enumerate(tokens):
                out.append(None if done[i] else t)
                done[i] = done[i] or t in stops
            yield out
            if all(done) or step == max_new_tokens - 1:
                return
            logits = decoder.step(nxt)                                   # one decode step


def generate(model, prompts, max_new_tokens=32, temperature=0.0, top_k=None, top_p=None,
             seed=None, stop_token_ids=(), cuda_graph=None) -> list[list[int]]:
    rows = _as_rows(prompts, model.config.vocab_size)
    outs: list[list[int]] = [[] for _ in rows]
    for step in stream_generate(model, rows, max_new_tokens, temperature, top_k, top_p, seed,
                                stop_token_ids, cuda_graph):
        for i, t in enumerate(step):
            if t is not None:
                outs[i].append(t)
    return outs
