"""Batched generation for LFM2: left-padded prefill into a preallocated cache, then one
token per prompt per step (greedy, or sampled with temperature / top-k / top-p / min-p;
a repetition penalty on the prompt's and generated tokens before either). Each row
samples with its own generator, row i seeded with seed + i, so a row gets the tokens it gets
alone (with that seed) whatever else shares its batch.

Invariants: the cache is allocated once (prompt length + max_new_tokens slots) and every
step writes one slot; a prompt that hit a stop token keeps being fed (its outputs are
ignored) so the batch stays rectangular; the stop token itself is the last one reported.

transformers' names are accepted too: attention_mask (a left-padded (B, L) batch; each row
keeps its 1-columns), do_sample (False: greedy; True: sampled, temperature 1.0 by default),
eos_token_id (an id or a list, joining stop_token_ids), min_p and repetition_penalty (as
transformers' MinPLogitsWarper and RepetitionPenaltyLogitsProcessor). As transformers does,
what a call leaves out (None) comes from the checkpoint's generation_config.json
(model.generation_defaults, generation_config.py), and a call that samples through do_sample
(given, or the file's) takes transformers' defaults for what neither gives: temperature 1.0,
top_k 50.

prefix_allowed_tokens_fn and logits_processor (transformers'), structured_outputs (vLLM's
{kind: value}) and tokenizer: steering.py.

cuda_graph (decoding.py): None (default) decodes with a static cache replayed as a CUDA
graph when the model is on CUDA, eagerly elsewhere; False forces the eager dynamic path;
True requires the graph (ValueError off CUDA). Sampling runs outside the graph.
"""
from __future__ import annotations

import numbers
from typing import Iterable, Iterator

import torch

from .decoding import open_decoder, use_cuda_graph
from .generation_config import TRANSFORMERS_SAMPLING
from .logit_processing import check_repetition_penalty, penalize_repetition, seen_mask
from .sampling import sample_batch
from .steering import Steering


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


def _sample_rows(logits, temperature, top_k, top_p, min_p, gens, done) -> torch.Tensor:
    """logits (B, V) -> (B,): greedy (gens None), or the live rows sampled together, row i with
    gens[i]. A finished row's token is never reported: it is taken greedily (temperature 0 in
    sample_batch), leaving its generator alone."""
    b = len(done)
    temperatures = [0.0 if gens is None or done[i] else temperature for i in range(b)]
    return sample_batch(logits, temperatures, [top_k] * b, [top_p] * b, [min_p] * b, gens or [None] * b)


def _as_float(value, what: str) -> float:
    """float(value), or a ValueError saying what was expected (float() of a list is a TypeError,
    of a word a ValueError naming neither the argument nor its range)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}, got {value!r}") from None


STEERING_KEYWORDS = ("prefix_allowed_tokens_fn", "logits_processor", "structured_outputs", "tokenizer")
# transformers' generate() keywords this one lacks, and what to do instead
_NOT_TAKEN = {"max_length": "pass max_new_tokens (the new tokens only)",
              "pad_token_id": "not needed: each row's new tokens come back unpadded",
              "num_beams": "beam search is not implemented: greedy or sampled (do_sample) only",
              "use_cache": "the cache is always used"}


def check_keywords(caller: str, kwargs: dict) -> None:
    """TypeError naming `caller` (generate / stream_generate) for keywords beyond the steering
    ones: Python's own names the inner stream_generate and says nothing of what to use."""
    unknown = [k for k in kwargs if k not in STEERING_KEYWORDS]
    if unknown:
        hints = "; ".join(f"{k}: {_NOT_TAKEN[k]}" for k in unknown if k in _NOT_TAKEN)
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {unknown}"
                        + (f" ({hints})" if hints else "") + "; besides its named arguments it takes "
                        + ", ".join(STEERING_KEYWORDS))


def check_seed(seed, rows: int = 1) -> None:
    """seed None, or an int whose rows seed, seed + 1, ... torch.Generator.manual_seed takes."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not -2 ** 63 <= int(seed) <= 2 ** 64 - rows:
        raise ValueError(f"seed must be None or an int in [-2**63, 2**64 - {rows}] (row i samples with "
                         f"seed + i), got {seed!r}")


def check_generation_args(max_new_tokens, temperature, top_k, top_p, stop_token_ids, vocab, min_p=None):
    # ints as seed takes them: Python's or numpy's (numbers.Integral), never a bool
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    t = _as_float(temperature, "temperature must be a finite float >= 0 (0 = greedy)")
    if not (t >= 0.0 and t != float("inf")):
        raise ValueError(f"temperature must be a finite float >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (0.0 < _as_float(top_p, "top_p must be None or in (0, 1]") <= 1.0):
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
    if min_p is not None and (isinstance(min_p, bool) or not isinstance(min_p, (int, float))
                              or not 0.0 <= min_p <= 1.0):
        raise ValueError(f"min_p must be None or in [0, 1] (0 = off), got {min_p!r}")
    stops = set()
    for s in stop_token_ids or ():
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < vocab:
            raise ValueError(f"stop_token_ids must be token ids in [0, {vocab}), got {s!r}")
        stops.add(s)
    return t, stops


def with_model_defaults(defaults: dict, do_sample, temperature, top_k, top_p, min_p, repetition_penalty):
    """Fill what the call leaves out (None) from the checkpoint's sampling defaults, as
    transformers' generate() does: do_sample from the file when neither it nor a temperature
    is given; a sampling do_sample (the call's, else the file's) also takes the file's
    temperature, else transformers' own defaults (temperature 1.0, top_k 50); the file's top_k
    0 is off. A temperature > 0 alone samples (transformers would stay greedy without
    do_sample). -> (do_sample, temperature, top_k, top_p, min_p, repetition_penalty)."""
    if do_sample is None and temperature is None:
        do_sample = defaults.get("do_sample")
    samples = do_sample if do_sample is not None else defaults.get("do_sample")
    base = {**TRANSFORMERS_SAMPLING, **defaults} if samples else \
        {k: v for k, v in defaults.items() if k != "temperature"}   # not sampling through do_sample
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
             "repetition_penalty": repetition_penalty}
    if base.get("top_k") == 0:
        base["top_k"] = None                 # the file's 0 is off (a call's 0 stays an error)
    out = {k: v if v is not None else base.get(k) for k, v in given.items()}
    return (do_sample, *out.values())


def resolve_hf_arguments(temperature, do_sample, stop_token_ids, eos_token_id, vocab: int):
    """transformers' names -> ours: do_sample False is greedy whatever the temperature, True
    samples at temperature 1.0 unless one is given (None otherwise means 0 = greedy);
    eos_token_id (an id or a list) joins stop_token_ids. -> (temperature, stop ids)."""
    if do_sample is not None and not isinstance(do_sample, bool):
        raise ValueError(f"do_sample must be None, True or False, got {do_sample!r}")
    if do_sample is False:
        temperature = 0.0
    elif temperature is None:
        temperature = 1.0 if do_sample else 0.0
    elif do_sample and isinstance(temperature, (int, float)) and temperature == 0:
        raise ValueError("do_sample=True needs a temperature > 0 (0 is greedy); pass do_sample=False "
                         "for greedy decoding")
    if stop_token_ids is not None and (isinstance(stop_token_ids, (str, bytes))
                                       or not isinstance(stop_token_ids, Iterable)):
        raise ValueError(f"stop_token_ids must be a list of token ids, got {stop_token_ids!r}"
                         + (f" (pass [{stop_token_ids}])" if isinstance(stop_token_ids, int) else ""))
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
    if not isinstance(eos, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                       and 0 <= t < vocab for t in eos):
        raise ValueError(f"eos_token_id must be None, a token id in [0, {vocab}) or a list of them, "
                         f"got {eos_token_id!r}")
    return temperature, (*(stop_token_ids or ()), *eos)


def _unpad(prompts, attention_mask) -> list[list[int]]:
    """A left-padded batch prompts (B, L) with attention_mask (B, L) (1 = token, 0 = padding),
    tensors or nested lists, as transformers takes them -> each row's tokens."""
    try:
        ids, mask = torch.as_tensor(prompts), torch.as_tensor(attention_mask)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError("with attention_mask, prompts and the mask must be rectangular (batch, length) "
                         f"tensors or lists ({err})") from None
    if ids.dim() != 2 or mask.shape != ids.shape:
        raise ValueError(f"attention_mask must have the shape of prompts {tuple(ids.shape)} (batch, length), "
                         f"got {tuple(mask.shape)}")
    if mask.is_floating_point() or mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    mask = mask.bool()
    if (mask[:, :-1] & ~mask[:, 1:]).any():
        raise ValueError("attention_mask must be left padding (0s then 1s in every row); pad on the left "
                         "(tokenizer.padding_side = 'left'), as transformers' generate expects")
    for i, row in enumerate(mask):
        if not row.any():
            raise ValueError(f"attention_mask row {i} is all padding: every prompt needs a token")
    return [r[m].tolist() for r, m in zip(ids, mask)]


def _as_rows(prompts, vocab: int, attention_mask=None) -> list[list[int]]:
    if attention_mask is not None:
        prompts = _unpad(prompts, attention_mask)
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.dtype.is_floating_point:
            hint = " (one prompt: prompts.unsqueeze(0))" if prompts.dim() == 1 else ""
            raise ValueError(f"prompts must be a list of token-id lists or an integer (batch, length) tensor, "
                             f"got a {prompts.dtype} tensor of shape {tuple(prompts.shape)}{hint}")
        prompts = prompts.tolist()
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists (or a (B, L) tensor)")
    if all(isinstance(t, int) for t in prompts):       # one prompt, not wrapped in a batch
        one = repr(list(prompts)) if len(prompts) <= 8 else "ids"
        raise ValueError(f"prompts must be a list of token-id lists, one per prompt; for one prompt "
                         f"pass [{one}]")
    rows = []
    for i, p in enumerate(prompts):
        if not isinstance(p, (list, tuple)) or not p:
            raise ValueError(f"prompt {i} must be a non-empty list of token ids "
                             "(start it with bos_token_id if there is no text)")
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in p):
            raise ValueError(f"prompt {i} must hold ints in [0, vocab_size={vocab})")
        rows.append(list(p))
    return rows


def stream_generate(model, prompts, max_new_tokens=32, temperature=None, top_k=None, top_p=None,
                    seed=None, stop_token_ids=(), cuda_graph=None, *, attention_mask=None,
                    do_sample=None, eos_token_id=None, min_p=None, repetition_penalty=None,
                    prefix_allowed_tokens_fn=None, logits_processor=None, structured_outputs=None,
                    tokenizer=None) -> Iterator[list[int | None]]:
    cfg = model.config
    rows = _as_rows(prompts, cfg.vocab_size, attention_mask)   # validate now, not at the first next()
    do_sample, temperature, top_k, top_p, min_p, repetition_penalty = with_model_defaults(
        getattr(model, "generation_defaults", {}), do_sample, temperature, top_k, top_p, min_p, repetition_penalty)
    temperature, stop_token_ids = resolve_hf_arguments(temperature, do_sample, stop_token_ids, eos_token_id,
                                                         cfg.vocab_size)
    temperature, stops = check_generation_args(max_new_tokens, temperature, top_k, top_p, stop_token_ids,
                                               cfg.vocab_size, min_p)
    max_new_tokens, top_k = int(max_new_tokens), None if top_k is None else int(top_k)   # numpy's as Python's
    penalty = 1.0 if repetition_penalty is None else check_repetition_penalty(repetition_penalty)
    check_seed(seed, len(rows))
    use_cuda_graph(model, cuda_graph)          # cuda_graph=True off CUDA: raise now too
    steering = Steering.build(model, rows, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                              logits_processor=logits_processor, structured_outputs=structured_outputs,
                              tokenizer=tokenizer)
    return _steps(model, rows, max_new_tokens, temperature, (top_k, top_p, min_p), penalty, seed, stops,
                  cuda_graph, steering)


def _steps(model, rows, max_new_tokens, temperature, filters, penalty, seed, stops, cuda_graph, steering=None):
    """filters: (top_k, top_p, min_p); penalty: the repetition penalty (1.0 = off); steering:
    a Steering (steering.py) or None."""
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
    seen = seen_mask(rows, model.config.vocab_size, dev) if penalty != 1.0 else None   # (B, V)
    done = [False] * b
    with open_decoder(model, b, width + max_new_tokens, cuda_graph) as decoder:
        logits = decoder.prefill(ids, mask)                              # (B, V) float32
        for step in range(max_new_tokens):
            with torch.inference_mode():
                if seen is not None:
                    logits = penalize_repetition(logits, seen, penalty)
                if steering is not None:
                    logits = steering.apply(logits, done)
                nxt = _sample_rows(logits, temperature, *filters, gens, done)   # (B,)
                if seen is not None:
                    seen[torch.arange(b, device=dev), nxt] = True
            tokens = nxt.tolist()
            complete = steering.advance(tokens, done) if steering is not None else [False] * b
            out: list[int | None] = []
            for i, t in enumerate(tokens):
                out.append(None if done[i] else t)
                done[i] = done[i] or t in stops or complete[i]
            yield out
            if all(done) or step == max_new_tokens - 1:
                return
            logits = decoder.step(nxt)                                   # one decode step


def generate(model, prompts, max_new_tokens=32, temperature=None, top_k=None, top_p=None,
             seed=None, stop_token_ids=(), cuda_graph=None, *, attention_mask=None, do_sample=None,
             eos_token_id=None, min_p=None, repetition_penalty=None, **steering) -> list[list[int]]:
    rows = _as_rows(prompts, model.config.vocab_size, attention_mask)
    outs: list[list[int]] = [[] for _ in rows]
    for step in stream_generate(model, rows, max_new_tokens, temperature, top_k, top_p, seed,
                                stop_token_ids, cuda_graph, do_sample=do_sample, eos_token_id=eos_token_id,
                                min_p=min_p, repetition_penalty=repetition_penalty, **steering):
        for i, t in enumerate(step):
            if t is not None:
                outs[i].append(t)
    return outs
