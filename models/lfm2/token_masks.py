"""vLLM's token masks on a sequence's next token (SamplingParams.allowed_token_ids, bad_words):

    allowed_token_ids: only these ids may come next (every other gets -inf); vLLM adds no
        end-of-sequence id for you, so a list without one runs to max_new_tokens
    bad_words_ids: token sequences never completed: the last id of each is -inf whenever the
        generated tokens end with the rest of it (a one-token word: always)

Both look at the generated tokens only, not the prompt (vLLM's rule). Words become ids in the
service (bad_words_ids_for: each word as written and after a space, as vLLM tokenizes them).
"""
from __future__ import annotations

import torch

MAX_ALLOWED_TOKEN_IDS = 65536   # a vocabulary's worth
MAX_BAD_WORDS = 256
MAX_BAD_WORD_TOKENS = 64


def check(seq, vocab_size: int) -> None:
    """ValueError naming what was expected, for a sequence's mask fields."""
    allowed = getattr(seq, "allowed_token_ids", None)
    if allowed is not None:
        if not allowed or len(allowed) > MAX_ALLOWED_TOKEN_IDS:
            raise ValueError(f"allowed_token_ids: expected 1 to {MAX_ALLOWED_TOKEN_IDS} token ids, got {len(allowed)}")
        bad = [t for t in allowed if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"allowed_token_ids: token ids must be in [0, {vocab_size}), got {bad[0]!r}")
        if seq.min_tokens and set(allowed) <= set(seq.stop_token_ids):
            raise ValueError("allowed_token_ids: every allowed token is a stop token, which min_tokens="
                             f"{seq.min_tokens} holds off: nothing could be generated")
    words = getattr(seq, "bad_words_ids", ())
    if len(words) > 2 * MAX_BAD_WORDS:   # each word as written and after a space
        raise ValueError(f"bad_words: at most {MAX_BAD_WORDS} words")
    for w in words:
        if not w or len(w) > MAX_BAD_WORD_TOKENS or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab_size for t in w):
            raise ValueError(f"bad_words: each word must be 1 to {MAX_BAD_WORD_TOKENS} token ids in "
                             f"[0, {vocab_size}), got {list(w)[:8]!r}")


def masks(seq) -> bool:
    return getattr(seq, "allowed_token_ids", None) is not None or bool(getattr(seq, "bad_words_ids", ()))


def allowed_mask(seq, vocab: int, device) -> torch.Tensor | None:
    """(V,) bool of allowed_token_ids (built once per sequence), or None when unrestricted."""
    if getattr(seq, "allowed_token_ids", None) is None:
        return None
    if seq.allowed is None:
        seq.allowed = torch.zeros(vocab, dtype=torch.bool, device=device)
        seq.allowed[torch.tensor(sorted(seq.allowed_token_ids), device=device)] = True
    return seq.allowed


def banned_now(seq) -> list[int]:
    """The last id of every bad word whose other ids end the generated tokens."""
    out = []
    for w in getattr(seq, "bad_words_ids", ()):
        n = len(w) - 1
        if n == 0 or (len(seq.tokens) >= n and tuple(seq.tokens[-n:]) == tuple(w[:-1])):
            out.append(w[-1])
    return out


def bad_words_ids_for(words, encode) -> tuple[tuple[int, ...], ...]:
    """Words -> token id sequences as vLLM makes them: each word as written (leading spaces
    stripped) and, where that tokenizes differently as a new word, after a space."""
    out: list[tuple[int, ...]] = []
    for word in words:
        plain = tuple(encode(word.lstrip()))
        if not plain:
            raise ValueError(f"bad_words: expected non-blank words, got {word!r}")
        out.append(plain)
        spaced = tuple(encode(" " + word.lstrip()))
        if spaced and spaced[0] != plain[0] and len(spaced) == len(plain):
            out.append(spaced)
    return tuple(dict.fromkeys(out))


def sequence_fields(allowed_token_ids, bad_words, tokenizer) -> dict:
    """A request's allowed_token_ids (ids) and bad_words (text) -> the Sequence's fields; the
    words through the tokenizer (ValueError without one)."""
    fields: dict = {}
    if allowed_token_ids is not None:
        fields["allowed_token_ids"] = frozenset(allowed_token_ids)
    if bad_words:
        if tokenizer is None:
            raise ValueError("bad_words: the model has no tokenizer (tokenizer.json) to spell words with; "
                             "leave 'bad_words' out")
        fields["bad_words_ids"] = bad_words_ids_for(bad_words, lambda text: tokenizer.encode(text, add_special_tokens=False))
    return fields
