"""Tokenizers for LFM2: the demo's byte-level one and a wrapper over a local tokenizer.json.

Both expose encode(str) -> list[int] (with the bos token first, as LFM2's tokenizer does),
decode(list[int], skip_special_tokens=True) -> str (special tokens skipped, or written by
name, `<|im_end|>`, as transformers' decode writes them), token_bytes(id) -> bytes (one token's raw
UTF-8 bytes, which decode of a part of a character turns into U+FFFD), special_token_name(id)
(the name of a token decode skips, as logprobs name it), eos/bos/pad_token_id,
and apply_chat_template(messages) -> list[int] (models/lfm2/chat.py; starts with the bos id too).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from .chat import DEFAULT_TEMPLATE, render_chat
from .config import LFM2Config

N_BYTES = 256  # ids 0..255 are the bytes themselves; specials come after


class _SpecialIds:
    """vocab_size and the pad/bos/eos ids every tokenizer here takes from the config."""

    def __init__(self, config: LFM2Config):
        self.vocab_size = config.vocab_size
        self.pad_token_id = config.pad_token_id
        self.bos_token_id = config.bos_token_id
        eos = config.eos_token_ids
        self.eos_token_id = eos[0] if eos else None

    @staticmethod
    def _check_text(text) -> None:
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")


class ByteTokenizer(_SpecialIds):
    """UTF-8 bytes as ids 0..255; pad/bos/eos are the config's ids (>= 256 in lfm2-demo)."""

    def __init__(self, config: LFM2Config):
        if config.vocab_size < N_BYTES:
            raise ValueError(f"a byte tokenizer needs vocab_size >= {N_BYTES}, got {config.vocab_size}")
        super().__init__(config)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self._check_text(text)
        ids = list(text.encode("utf-8"))
        if add_special_tokens and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        return ids

    chat_template = DEFAULT_TEMPLATE

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        # The template has no bos text: bytes cannot spell a special id, so encode() adds it.
        return self.encode(render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        # Ids >= 256 are specials (or unused): skipped, or written by name. Incomplete UTF-8 -> U+FFFD.
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            return bytes(i for i in ids if 0 <= i < N_BYTES).decode("utf-8", errors="replace")
        parts, run = [], bytearray()
        for i in ids:
            if 0 <= i < N_BYTES:
                run.append(i)
                continue
            parts += [run.decode("utf-8", errors="replace"), self.special_token_name(i)]
            run = bytearray()
        return "".join(parts) + run.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if 0 <= token_id < N_BYTES else b""

    def special_token_name(self, token_id: int) -> str:
        """A special id's name, for logprobs (its text is none, so "" named them all alike): LFM2's
        names for pad and bos, `<|im_end|>` for eos (it ends the demo's ChatML turn), `<|special_N|>` else."""
        names = {self.pad_token_id: "<|pad|>", self.bos_token_id: "<|startoftext|>",
                 self.eos_token_id: "<|im_end|>"}
        return names.get(token_id) or f"<|special_{token_id}|>"


@lru_cache(maxsize=1)
def byte_level_bytes() -> dict[str, int]:
    """GPT-2's bytes_to_unicode inverted: the character a byte-level BPE vocabulary spells
    each byte with -> that byte (printable Latin-1 as itself, the rest from U+0100 on)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


class HFTokenizer(_SpecialIds):
    """A local tokenizer.json through the `tokenizers` library (never downloads). Its chat
    template and bos/eos texts come from the same directory (chat.load_chat_template)."""

    def __init__(self, path, config: LFM2Config):
        from tokenizers import Tokenizer

        from .chat import load_chat_template, special_token_text
        path = Path(path)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception types
            raise ValueError(f"cannot read tokenizer {path}: {e}") from None
        super().__init__(config)
        self.chat_template = load_chat_template(path.parent)
        self.bos_token = special_token_text(path.parent, "bos_token") or self._token_text(self.bos_token_id)
        self.eos_token = special_token_text(path.parent, "eos_token") or self._token_text(self.eos_token_id)

    def _token_text(self, token_id) -> str:
        return (self._tok.id_to_token(token_id) or "") if token_id is not None else ""

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """As transformers' apply_chat_template(tokenize=True): the template writes the bos text,
        so the rendered prompt is encoded without adding special tokens again."""
        if self.chat_template is None:
            raise ValueError("this checkpoint has no chat template (chat_template.jinja or "
                             "tokenizer_config.json's chat_template); send a formatted prompt to /v1/completions")
        text = render_chat(self.chat_template, messages, bos_token=self.bos_token, eos_token=self.eos_token,
                           add_generation_prompt=add_generation_prompt)
        return self.encode(text, add_special_tokens=False)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self._check_text(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def tokenizer_json(self) -> str:
        """The tokenizer as loaded, as tokenizer.json text (structured outputs' llguidance reads it)."""
        return self._tok.to_str()

    def special_token_name(self, token_id: int) -> str:
        """A token without text (a special one, skipped by decode) by its vocabulary name, `<|im_end|>`."""
        return self._tok.id_to_token(int(token_id)) or f"token_id:{token_id}"

    def token_bytes(self, token_id: int) -> bytes:
        """As decode([token_id]) in UTF-8 where that is a whole text; a part of a character
        (decoded U+FFFD) from the vocabulary's spelling: byte-level BPE characters or a byte
        fallback piece `<0xE2>`."""
        text = self.decode([token_id])
        if "\ufffd" not in text:
            return text.encode("utf-8")
        piece = self._tok.id_to_token(int(token_id)) or ""
        fallback = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        alphabet = byte_level_bytes()
        if type(self._tok.decoder).__name__ == "ByteLevel" and piece and all(c in alphabet for c in piece):
            return bytes(alphabet[c] for c in piece)
        return text.encode("utf-8")


def end_of_sequence_ids(tokenizer, config) -> tuple[int, ...]:
    """Every end-of-sequence id, the tokenizer's then the config's (a config may list several,
    as transformers stops at any), each once; the tokenizer may be None (token ids only)."""
    ids = (getattr(tokenizer, "eos_token_id", None), *getattr(config, "eos_token_ids", ()))
    return tuple(dict.fromkeys(t for t in ids if t is not None))
