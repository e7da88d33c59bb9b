"""How a generation's tokens become its reply's text (handlers/generate.py's events).

Stop strings are matched on the decoded text; while streaming, the last (longest stop string
- 1) characters are held back so a stop string is never half-sent, and so are trailing U+FFFD
(a byte-level tokenizer's incomplete UTF-8 character), so the streamed text is the final text.

Stop tokens (the model's end-of-sequence ids unless ignore_eos, and the request's
stop_token_ids) end a generation without text, stop strings cut it where they start, unless
include_stop_str_in_output keeps either; before min_tokens neither ends it (vLLM's rules: the
engine masks stop tokens, and a stop string must end in the text after min_tokens' token).

skip_special_tokens false (vLLM's) writes special tokens' text (`<|im_end|>`) into the output:
each request decodes with its plan's tokenizer (KeepingSpecialTokens), as do the OpenAI routes'
logprob names and offsets.
"""
from __future__ import annotations

from typing import Optional


def sendable(text: str, hold: int) -> int:
    """How much of the text decoded so far may be streamed: never the last `hold` characters
    (a stop string may still complete there), nor trailing U+FFFD, which may be the bytes of a
    character whose next byte is still to come (decoding them again later gives the
    character). What is sent is then always a prefix of the final text. The `hold` characters
    are held before the incomplete one, which may complete a stop string (held from the
    text's end, "ab\ufffd" under the stop string "bé" sent the "b" the stop then cut)."""
    end = len(text)
    for _ in range(3):   # an incomplete character decodes to one U+FFFD; invalid bytes before
        if end and text[end - 1] == "\ufffd":   # it are U+FFFD for good (sent a token later)
            end -= 1
    return max(end - hold, 0)


def stop_string_cut(text: str, stops: list[str], floor: int, include: bool) -> Optional[int]:
    """Where the text ends at its first stop string that ends after `floor` (the text made
    before min_tokens' token): at the string's start, or its end when included; None: no stop."""
    hits = [(at, len(x)) for x in stops if (at := text.find(x, max(0, floor - len(x) + 1))) >= 0]
    if not hits:
        return None
    at, n = min(hits)
    return at + n if include else at


class KeepingSpecialTokens:
    """A tokenizer whose decode writes special tokens' text (skip_special_tokens=False); a
    special token's bytes are that text's. Anything else is the tokenizer's own."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def decode(self, ids) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        own = getattr(self._tok, "token_bytes", None)
        return (own(token_id) if own is not None else b"") or self.decode([token_id]).encode("utf-8")

    def __getattr__(self, name):
        return getattr(self._tok, name)
