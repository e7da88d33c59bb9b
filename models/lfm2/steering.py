"""What generate() may do to each step's logits beyond its sampling settings, under
transformers' and vLLM's names:

    prefix_allowed_tokens_fn(batch_id, input_ids) -> list[int]   transformers': only these ids next
    logits_processor: callables (input_ids (B, L), scores (B, V)) -> scores, in order (transformers'
        LogitsProcessor / LogitsProcessorList items work as they are)
    structured_outputs: {kind: value}, one of structured.KINDS (vLLM's StructuredOutputsParams
        fields: {"json": schema}, {"regex": r"..."}, {"choice": [...]}, {"grammar": "..."},
        {"json_object": True}), held through the tokenizer (model.tokenizer unless one is given)

Applied after the repetition penalty and before temperature / top-k / top-p / min-p, as
transformers orders its processors before its warpers: the structured mask, then the allowed
prefix, then the processors. A row whose structured output is complete (nothing may follow)
ends there, as at a stop token. Rows that already stopped are neither asked about nor masked
(their tokens are never reported).

input_ids as the callables see them: prefix_allowed_tokens_fn gets row batch_id's own tokens
(prompt then generated, 1-D, no padding); logits_processor gets every row left-padded with
pad_token_id to one length (B, L), as transformers' generate passes its batch.
"""
from __future__ import annotations

import torch

from .structured import KINDS


class Steering:
    def __init__(self, rows: list[list[int]], vocab: int, pad: int, device, *, allowed_fn, processors,
                 constraints):
        self.rows = [list(r) for r in rows]          # prompt + generated, per row
        self.vocab, self.pad, self.device = vocab, pad, device
        self.allowed_fn, self.processors, self.constraints = allowed_fn, processors, constraints

    @classmethod
    def build(cls, model, rows, *, prefix_allowed_tokens_fn=None, logits_processor=None, structured_outputs=None,
              tokenizer=None) -> "Steering | None":
        """None when the call asks for none of them (generate() then costs nothing more);
        ValueError naming what was expected for anything malformed. A structured output's
        grammar is compiled here, once, and each row gets its own copy."""
        if prefix_allowed_tokens_fn is not None and not callable(prefix_allowed_tokens_fn):
            raise ValueError("prefix_allowed_tokens_fn must be a callable (batch_id, input_ids) -> list of token ids, "
                             f"got {type(prefix_allowed_tokens_fn).__name__}")
        processors = _processors(logits_processor)
        cfg = model.config
        constraints = None
        if structured_outputs is not None:
            template = _compile(structured_outputs, tokenizer if tokenizer is not None else model.tokenizer, cfg)
            constraints = [template.copy() for _ in rows]
        elif tokenizer is not None and getattr(tokenizer, "encode", None) is None:
            raise ValueError(f"tokenizer must be a tokenizer (models.lfm2 ByteTokenizer / HFTokenizer), got "
                             f"{type(tokenizer).__name__}")
        if prefix_allowed_tokens_fn is None and not processors and constraints is None:
            return None
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        return cls(rows, cfg.vocab_size, pad, model.device, allowed_fn=prefix_allowed_tokens_fn,
                   processors=processors, constraints=constraints)

    def apply(self, logits: torch.Tensor, done: list[bool]) -> torch.Tensor:
        """logits (B, V) float -> a new (B, V) with the disallowed ids of live rows at -inf and
        the processors applied."""
        out = logits.clone()                      # never write into the decoder's (graph's) buffer
        for i, row in enumerate(self.rows):
            if done[i]:
                continue
            if self.constraints is not None:
                out[i].masked_fill_(~self.constraints[i].allowed(out.device), float("-inf"))
            if self.allowed_fn is not None:
                out[i].masked_fill_(~self._allowed(i, row, out.device), float("-inf"))
                if self.constraints is not None and not bool(torch.isfinite(out[i]).any()):
                    raise ValueError(f"row {i}: prefix_allowed_tokens_fn allows none of the tokens its "
                                     "structured output allows next")
        if self.processors:
            ids = self._padded()
            for proc in self.processors:
                out = proc(ids, out)
                if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
                    raise ValueError(f"logits_processor {_name(proc)} must return the scores tensor "
                                     f"{tuple(logits.shape)} (batch, vocab), got "
                                     f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return out

    def advance(self, tokens: list[int], done: list[bool]) -> list[bool]:
        """Take the tokens just drawn (one per row); -> per row, whether its structured output
        is now complete (the row ends there). ValueError when a token broke the grammar (a
        logits_processor let a masked id through)."""
        complete = [False] * len(tokens)
        for i, t in enumerate(tokens):
            if done[i]:
                continue
            self.rows[i].append(t)
            if self.constraints is not None:
                c = self.constraints[i]
                c.advance(t)
                if c.error is not None:
                    raise ValueError(f"structured_outputs: row {i} left its grammar at token {t}: {c.error}")
                complete[i] = c.complete
        return complete

    def _allowed(self, i: int, row: list[int], device) -> torch.Tensor:
        ids = self.allowed_fn(i, torch.tensor(row, dtype=torch.long, device=device))
        try:
            ids = torch.as_tensor(ids, dtype=torch.long, device=device).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            ids = None
        if ids is None or ids.numel() == 0 or not bool(((ids >= 0) & (ids < self.vocab)).all()):
            raise ValueError(f"prefix_allowed_tokens_fn({i}, input_ids) must return a non-empty list of token ids in "
                             f"[0, {self.vocab}) (an empty one leaves nothing to generate), got {ids!r}")
        allowed = torch.zeros(self.vocab, dtype=torch.bool, device=device)
        allowed[ids] = True
        return allowed

    def _padded(self) -> torch.Tensor:
        width = max(len(r) for r in self.rows)
        ids = torch.full((len(self.rows), width), self.pad, dtype=torch.long)
        for i, r in enumerate(self.rows):
            ids[i, width - len(r):] = torch.tensor(r)
        return ids.to(self.device)


def _name(proc) -> str:
    return getattr(proc, "__name__", type(proc).__name__)


def _processors(logits_processor) -> list:
    """None, one callable, or a list of them (a LogitsProcessorList is a list) -> a list."""
    if logits_processor is None:
        return []
    procs = [logits_processor] if callable(logits_processor) else logits_processor
    if not isinstance(procs, (list, tuple)) or not all(callable(p) for p in procs):
        raise ValueError("logits_processor must be a callable (input_ids, scores) -> scores or a list of them, "
                         f"got {type(logits_processor).__name__}")
    return list(procs)


def _compile(structured_outputs, tokenizer, cfg):
    """{kind: value} -> the compiled TokenConstraint (never advanced: rows take copies)."""
    from .structured import compile_constraint, guidance_tokenizer
    from .tokenizer import end_of_sequence_ids
    if not isinstance(structured_outputs, dict) or len(structured_outputs) != 1 \
            or next(iter(structured_outputs)) not in KINDS:
        raise ValueError(f"structured_outputs must be a dict with one key of {', '.join(KINDS)} "
                         f"(e.g. {{'json': schema}}), got {structured_outputs!r}"[:400])
    if tokenizer is None or getattr(tokenizer, "encode", None) is None:
        raise ValueError("structured_outputs needs the model's tokenizer: the model has none (a checkpoint without "
                         "tokenizer.json); pass tokenizer=")
    ((kind, value),) = structured_outputs.items()
    guidance = guidance_tokenizer(tokenizer, cfg.vocab_size, end_of_sequence_ids(tokenizer, cfg))
    return compile_constraint(guidance, kind, value, cfg.vocab_size)   # on a deep stack, size-checked (structured.py)
