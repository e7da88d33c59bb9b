"""Continuous batching for LFM2 generation: sequences join and leave between decode steps.

    engine = ContinuousBatch(model, capacity=16, max_length=2048)
    seq = engine.add(Sequence([1, 5, 9], max_new_tokens=32, temperature=0.7, seed=3))
    while engine.busy:
        for seq, token in engine.step():      # one new token per live sequence
            ...                               # seq.done / seq.finish_reason once it stopped

Each `step()` runs one decode step for the live rows, then prefills waiting sequences: the
ones that fit the free rows, left-padded into one group, whole or one `prefill_chunk` of
columns per step (a long prompt then delays the others' next token by a chunk, not by the
whole prompt); when the group's prefill ends, its sequences take rows and their first tokens. A sequence leaves as soon as it is done (its stop token or
max_new_tokens reached, or `cancel()`ed), freeing its row for the next waiting one, so
short and long generations share the batch without waiting for each other.

Tokens equal what `LFM2ForCausalLM.generate` gives each sequence alone (the same sampling
code, each sequence with its own seeded generator) up to float rounding of batched matmuls.
The depthwise policy is the caller's (`use_impl` around `step()`): one engine per policy.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import torch

from .decoding import use_cuda_graph
from . import logit_processing
from .generation import check_generation_args
from .sampling import sample_batch
from .prefill import Prefill
from .scoring import token_logprobs
from .slots import SlotDecoder

MAX_TOP_LOGPROBS = 20    # most likely tokens reported per generated token, at most


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    tokens: list[int] = field(default_factory=list)   # generated so far (a stop token included)
    done: bool = False
    finish_reason: str | None = None                  # "stop" | "length" | "cancelled"
    row: int | None = None                            # its SlotDecoder row while live
    generator: torch.Generator | None = None
    cancelled: bool = False
    cached_tokens: int = 0                            # prompt tokens restored from a prefix cache
    # None: off; k: each generated token's log-probability under the model (the raw
    # distribution, before temperature / top-k / top-p) and the k most likely tokens'
    token_logprobs: list = field(default_factory=list)   # [(logprob, [(token, logprob)] * k)]
    logprobs: int | None = None
    # OpenAI's logit adjustments (logit_processing.py): penalties on tokens generated so far,
    # and a bias per token id
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    # transformers'/vLLM's: a penalty on the prompt's and generated tokens (1.0 off), a
    # probability floor relative to the most likely token (0 off), and stop tokens held off
    # until min_tokens were generated
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    min_tokens: int = 0
    seen: torch.Tensor | None = field(default=None, repr=False)   # (1, V) bool, logit_processing
    seen_upto: int = field(default=0, repr=False)                # tokens already marked in it
    # Structured outputs (structured.py): the tokens allowed next; the sequence ends ("stop")
    # once its text is complete. None: off.
    constraint: Any = field(default=None, repr=False)
    # vLLM's masks (token_masks.py): only these ids next (None: any), and token sequences
    # never completed
    allowed_token_ids: frozenset[int] | None = None
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    allowed: torch.Tensor | None = field(default=None, repr=False)   # (V,) bool, built once

    def record(self, token: int) -> None:
        """Append a generated token; done at a stop token or at max_new_tokens."""
        self.tokens.append(token)
        if self.constraint is not None:
            self.constraint.advance(token)
        if token in self.stop_token_ids or self.constraint is not None and self.constraint.complete:
            self.done, self.finish_reason = True, "stop"
        elif len(self.tokens) >= self.max_new_tokens:
            self.done, self.finish_reason = True, "length"


class ContinuousBatch:
    def __init__(self, model, capacity: int, max_length: int, cuda_graph: bool | None = None,
                 prefill_chunk: int | None = None, prefix_cache=None):
        """prefill_chunk: prompt tokens (columns) a step prefills, so a long prompt joining
        delays the live generations' next token by one chunk, not the whole prompt; None:
        whole prompts in the step they join. prefix_cache: a PrefixCache (prefix_cache.py):
        prompts starting with a cached block-aligned prefix prefill only the rest (each
        alone: its group's columns start after the prefix), and every group's prefixes are
        kept for later prompts."""
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be None or >= 1, got {prefill_chunk}")
        self.model, self.prefill_chunk, self.prefix_cache = model, prefill_chunk, prefix_cache
        self.decoder = SlotDecoder(model, capacity, max_length, graph=use_cuda_graph(model, cuda_graph))
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.rows: list[Sequence] = []       # rows[r] is the sequence in decoder row r
        self.joining: list[Sequence] = []    # the group being prefilled (rows reserved for it)
        self.joining_rows: list[int] = []    # joining[i]'s row in the prefill (its prompt's first)
        self.prefill: Prefill | None = None

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.rows or self.joining)

    @property
    def decode_only(self) -> bool:
        """True when the next step() only decodes the live rows: no group is prefilling, none
        can join (nothing waits, or no row is free) and no live row is cancelled (its row
        would be freed first, and a waiting sequence could take it). What a launch count per
        generated token must be measured on (service/generation.py)."""
        return (bool(self.rows) and self.prefill is None and not self.joining
                and (not self.waiting or self.decoder.free == 0)
                and not any(s.cancelled for s in self.rows))

    @property
    def capacity(self) -> int:
        return self.decoder.capacity

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the rows' conv states and KV caches."""
        s = self.decoder.store
        return sum(t.numel() * t.element_size() for t in (*s.conv_states, *s.keys, *s.values) if t is not None)

    def add(self, seq: Sequence) -> Sequence:
        """Queue a sequence; it joins at the next step with a free row. Raises ValueError for
        arguments generate() would reject, or a sequence that cannot fit max_length."""
        cfg = self.model.config
        if not seq.prompt or not all(isinstance(t, int) and 0 <= t < cfg.vocab_size for t in seq.prompt):
            raise ValueError(f"prompt must be a non-empty list of token ids in [0, {cfg.vocab_size})")
        check_generation_args(seq.max_new_tokens, seq.temperature, seq.top_k, seq.top_p, seq.stop_token_ids,
                              cfg.vocab_size, seq.min_p)
        if seq.logprobs is not None and (isinstance(seq.logprobs, bool) or not isinstance(seq.logprobs, int)
                                         or not 0 <= seq.logprobs <= min(MAX_TOP_LOGPROBS, cfg.vocab_size)):
            raise ValueError(f"logprobs must be None or an int in [0, {MAX_TOP_LOGPROBS}], got {seq.logprobs!r}")
        logit_processing.check(seq, cfg.vocab_size)
        if len(seq.prompt) + seq.max_new_tokens > self.decoder.max_length:
            raise ValueError(f"prompt ({len(seq.prompt)} tokens) + max_new_tokens ({seq.max_new_tokens}) "
                             f"exceeds this batch's max_length {self.decoder.max_length}")
        if seq.max_new_tokens == 0:
            seq.done, seq.finish_reason = True, "length"
            return seq
        seq.generator = torch.Generator(device=self.model.device)
        if seq.seed is None:
            seq.generator.seed()
        else:
            seq.generator.manual_seed(int(seq.seed))
        self.waiting.append(seq)
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Stop `seq` before the next step (thread-safe: only sets a flag)."""
        seq.cancelled = True

    def step(self) -> list[tuple[Sequence, int]]:
        """Decode one token for every live row, then prefill the joining group by a chunk (or
        whole); a group whose prefill ends takes rows and gets its first tokens here.
        -> [(sequence, new token)] for every sequence that got one."""
        self._drop_cancelled()
        out: list[tuple[Sequence, int]] = []
        old = len(self.rows)
        if old:
            logits = self.decoder.step()                               # (old, V)
            out += self._sample(self.rows[:old], logits)
        if self.prefill is None:
            hit = self._admit()
            if hit is not None:
                self.joining[0].cached_tokens = hit[1]
            if self.joining:   # equal prompts (n choices, repeated requests) are prefilled once
                unique: dict[tuple[int, ...], int] = {}
                self.joining_rows = [unique.setdefault(tuple(s.prompt), len(unique)) for s in self.joining]
                self.prefill = Prefill(self.model, [list(p) for p in unique], self.prefill_chunk,
                                       self.prefix_cache, hit)
        if self.prefill is not None:
            logits = self.prefill.advance()                            # one chunk (or all)
            if logits is not None:
                joined = self.joining
                for s, r in zip(joined, self.decoder.attach(self.prefill, self.joining_rows)):
                    s.row = r
                # rows and joining change together: the server's admission check reads both
                # from another thread, and would count the group twice while it is sampled.
                self.rows += joined
                self.joining = []
                keep = [i for i, s in enumerate(joined) if not s.done]   # not cancelled meanwhile
                out += self._sample([joined[i] for i in keep], logits[[self.joining_rows[i] for i in keep]])
                self.prefill = None
        self._retire_finished()
        return out

    # --- internals ------------------------------------------------------------------------
    def _admit(self) -> object:
        """self.joining = the waiting sequences (FIFO) that fit the free rows and, padded to
        the group's longest prompt, still fit max_length (-> None); or a sequence whose prompt
        starts with a cached prefix, alone (-> its prefix_cache.lookup hit). The group is
        chosen first and becomes `joining` before it leaves `waiting`: the server's admission
        reads both from another thread, and a sequence in neither looked like a free row."""
        group: list[Sequence] = []
        hit = None
        free, limit = self.decoder.free, self.decoder.max_length     # (no group is joining now)
        cached = self.prefix_cache.lookup if self.prefix_cache is not None else (lambda prompt: None)
        for seq in self.waiting:
            if len(group) == free:
                break
            found = cached(seq.prompt)
            if found is not None:
                if not group:
                    group, hit = [seq], found
                break
            trial = group + [seq]
            width = max(len(s.prompt) for s in trial)
            if group and width + max(s.max_new_tokens for s in trial) > limit:
                break                                  # joins a later group
            group.append(seq)
        self.joining = group
        for _ in group:
            self.waiting.popleft()
        return hit

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[tuple[Sequence, int]]:
        """One token per sequence from its row of logits (V,), each with its own generator,
        after its adjustments (penalties, logit_bias, min_tokens); logprobs are of the raw logits."""
        with torch.inference_mode():
            adjusted = logit_processing.apply(seqs, logits)
            picked = sample_batch(adjusted, [s.temperature for s in seqs], [s.top_k for s in seqs],
                                  [s.top_p for s in seqs], [s.min_p for s in seqs], [s.generator for s in seqs])
            self.decoder.set_next([s.row for s in seqs], picked)
            self._logprobs(seqs, logits, picked)
            tokens = picked.tolist()
        for s, t in zip(seqs, tokens):
            s.record(t)
        return list(zip(seqs, tokens))

    @staticmethod
    def _logprobs(seqs: list[Sequence], logits: torch.Tensor, picked: torch.Tensor) -> None:
        """Record the picked tokens' log-probabilities (and the top k) for the sequences that
        asked; one log_softmax over their rows."""
        want = [i for i, s in enumerate(seqs) if s.logprobs is not None]
        if not want:
            return
        idx = torch.tensor(want, device=logits.device)
        entries = token_logprobs(logits[idx], picked[idx], [seqs[i].logprobs for i in want])
        for i, entry in zip(want, entries):
            seqs[i].token_logprobs.append(entry)

    def _drop_cancelled(self):
        for s in [*self.rows, *self.waiting, *self.joining]:
            if s.cancelled and not s.done:
                s.done, s.finish_reason = True, "cancelled"
        self.waiting = collections.deque(s for s in self.waiting if not s.done)
        left = [(s, r) for s, r in zip(self.joining, self.joining_rows) if not s.done]
        # A group that lost members is dropped while its prefill is still in the left padding of
        # every one left (columns only the cancelled, longer prompts needed): they wait again at
        # the front (before leaving joining: the server's admission reads both), and regroup now.
        if len(left) < len(self.joining) and all(self.prefill.done <= self.prefill.offsets[r] for _, r in left):
            self.waiting.extendleft(reversed([s for s, _ in left]))
            self.joining, self.prefill = [], None
        self._retire_finished()

    def _retire_finished(self):
        for s in [s for s in self.rows if s.done]:
            moved = self.decoder.release(s.row)
            last = self.rows.pop()                      # rows mirrors the decoder's rows
            if moved is not None:
                self.rows[s.row] = last
                last.row = s.row
            s.row = None
