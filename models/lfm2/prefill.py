"""Prefill of a group of prompts, whole or a chunk of columns at a time.

    p = Prefill(model, [[1, 5, 9], [1, 7]], chunk=256)   # left-padded to one width
    while (logits := p.advance()) is None:                # one chunk per call
        ...                                               # (decode steps of others run here)
    rows = slot_decoder.attach(p)                         # the group's cache moves into rows

The group fills its own LFM2Cache (m rows x width slots), so a long prompt can be prefilled
over several steps of a continuous batch without holding decode rows, and without stalling
the live generations for the whole prompt: each call runs `chunk` columns through the model
(the dynamic path with a cache, as a prompt fed in pieces: conv states and keys carry over).
Padding columns are masked exactly as in one whole prefill, so the logits are the same.
"""
from __future__ import annotations

import torch

from .decoding import last_logits


class Prefill:
    def __init__(self, model, prompts: list[list[int]], chunk: int | None = None, prefix_cache=None,
                 hit=None):
        """prefix_cache: a PrefixCache (models/lfm2/prefix_cache.py) that keeps the group's
        block-aligned prefixes when it is done; hit: prefix_cache.lookup(prompts[0]) of a
        one-prompt group, whose cached tokens are restored instead of computed."""
        if not prompts or any(not p for p in prompts):
            raise ValueError("Prefill: expected one or more non-empty prompts")
        if chunk is not None and chunk < 1:
            raise ValueError(f"Prefill: chunk must be None (whole prompt) or >= 1, got {chunk}")
        if hit is not None and (len(prompts) != 1 or prefix_cache is None):
            raise ValueError("Prefill: a cached prefix (hit) is restored into a one-prompt group, from its prefix_cache")
        self.model, self.chunk = model, chunk
        m, self.width = len(prompts), max(len(p) for p in prompts)
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        ids = torch.full((m, self.width), pad, dtype=torch.long)
        mask = torch.zeros(m, self.width, dtype=torch.long)
        for i, p in enumerate(prompts):                                   # left padding
            ids[i, self.width - len(p):] = torch.tensor(p)
            mask[i, self.width - len(p):] = 1
        self.ids, self.mask = ids.to(model.device), mask.to(model.device)  # (m, width)
        with torch.inference_mode(False):
            self.cache = model.new_cache(m, self.width)
        self.done = 0                       # columns prefilled so far
        self.logits: torch.Tensor | None = None
        self.prompts, self.offsets = prompts, [self.width - len(p) for p in prompts]   # row r starts at offsets[r]
        self.prefix_cache = prefix_cache
        if hit is not None:
            prefix_cache.restore(hit, self.cache)
            self.done = hit[1]
        if prefix_cache is not None:
            self.prefix_keys = prefix_cache.request_taps(prompts, self.offsets, self.cache, skip=self.done)

    @property
    def rows(self) -> int:
        return self.ids.shape[0]

    @property
    def finished(self) -> bool:
        return self.done == self.width

    def advance(self) -> torch.Tensor | None:
        """Prefill the next chunk; after the last one -> next-token logits (m, V) float32."""
        if self.finished:
            raise ValueError("Prefill.advance: already finished")
        end = self.width if self.chunk is None else min(self.width, self.done + self.chunk)
        cols = slice(self.done, end)
        with torch.inference_mode():
            h = self.model.hidden_states(self.ids[:, cols], self.mask[:, cols], self.cache)
            self.done = end
            if self.finished:
                self.logits = last_logits(self.model, h)
                if self.prefix_cache is not None:
                    self.prefix_cache.store(self.prompts, self.offsets, self.cache, self.prefix_keys)
        return self.logits
