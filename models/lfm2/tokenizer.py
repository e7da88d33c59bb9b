"""Tokenizers for LFM2: the demo's byte-level one and a wrapper over a local tokenizer.json.

Both expose encode(str) -> list[int] (with the bos token first, as LFM2's tokenizer does),
decode(list[int]) -> str (special tokens skipped), and eos/bos/pad_token_id.
"""
from __future__ import annotations

from pathlib import Path

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

    def decode(self, ids) -> str:
        # Ids >= 256 are specials (or unused): skipped. Incomplete UTF-8 -> U+FFFD.
        return bytes(int(i) for i in ids if 0 <= int(i) < N_BYTES).decode("utf-8", errors="replace")


class HFTokenizer(_SpecialIds):
    """A local tokenizer.json through the `tokenizers` library (never downloads)."""

    def __init__(self, path, config: LFM2Config):
        from tokenizers import Tokenizer
        path = Path(path)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception types
            raise ValueError(f"cannot read tokenizer {path}: {e}") from None
        super().__init__(config)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self._check_text(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)
