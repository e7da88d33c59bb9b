"""Structured outputs: a sequence's tokens held to a JSON schema, any JSON object, a regular
expression, one of given strings, or a grammar (Lark, or llama.cpp's GBNF), through
llguidance, the constraint engine vLLM, SGLang and llama.cpp use.

At each step the sequence's TokenConstraint gives the tokens that keep the text a prefix of
the language (the rest get -inf before sampling: logit_processing.apply), and takes the token
drawn. Once the text is complete and nothing can follow it (a closed JSON object), the
sequence ends with finish reason "stop" (Sequence.record); where something may still follow
(a number's next digit), the end-of-sequence token is one of the allowed ones.

llguidance is imported only when a constraint is asked for (models/ never needs it otherwise).
"""
from __future__ import annotations

import json
import threading
from typing import Any

import torch

KINDS = ("json", "json_object", "regex", "choice", "grammar")   # vLLM's StructuredOutputsParams names
_MESSAGE_CHARS = 300   # of llguidance's error text in a ValueError (it quotes the grammar)
_lock = threading.Lock()
# llguidance's compiler recurses once per link of a `$ref` chain or a chain of grammar rules, in
# native code: on a thread's default 8 MiB stack ~1,000 chained $refs (68 KB of schema) or
# ~5,000 chained Lark rules (113 KB) overflowed it, a SIGSEGV that ended the server. Measured
# need: at most ~128 bytes of stack per character of the constraint; compiled on a thread of
# COMPILE_STACK_BYTES, a constraint of MAX_CONSTRAINT_CHARS (the most a server may allow) keeps a
# 2x margin (the default limit, service/settings.py max_grammar_chars, 8x).
COMPILE_STACK_BYTES = 256 << 20
MAX_CONSTRAINT_CHARS = 1 << 20
_stack_lock = threading.Lock()


def _llguidance():
    try:
        import llguidance
    except ImportError:   # a dependency of the project; missing only in a trimmed environment
        raise ValueError("structured outputs need the llguidance package (pip install llguidance)") from None
    return llguidance


class ConstraintError(ValueError):
    """A constraint that cannot be held to: "<what>: <detail>", what being its kind (regex) or
    "structured output" where llguidance's grammar says why. `detail` alone lets a caller name
    the constraint as its client gave it (the service: guided_regex, response_format)."""

    def __init__(self, what: str, detail: str):
        super().__init__(f"{what}: {detail}")
        self.detail = detail


def grammar_for(kind: str, value: Any) -> str:
    """A constraint as vLLM names it -> llguidance's grammar (not yet checked: check_grammar).
    json: a JSON schema (dict or its JSON text); json_object: any JSON object (value unused);
    regex: the whole output matches it; choice: exactly one of the strings; grammar: Lark or GBNF."""
    llg = _llguidance()
    Matcher = llg.LLMatcher
    compact = {"whitespace_flexible": False}   # JSON as json.dumps(separators=(",", ":")) writes it
    if kind == "json":
        try:
            schema = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            raise ConstraintError("json", "expected a JSON schema (an object, or its JSON text)") from None
        except RecursionError:   # Python's parser: "[[[[..." deeper than the interpreter's stack
            raise ConstraintError("json", "the schema's JSON text nests too deeply to parse") from None
        if not isinstance(schema, (dict, bool)):
            raise ConstraintError("json", f"expected a JSON schema (an object), got {type(schema).__name__}")
        try:
            return Matcher.grammar_from_json_schema(schema, defaults=compact)
        except ValueError as exc:   # a value JSON cannot carry (half a surrogate pair)
            raise ConstraintError("json", str(exc)[:_MESSAGE_CHARS]) from None
    if kind == "json_object":
        return Matcher.grammar_from_json_schema({"type": "object"}, defaults=compact)
    if kind == "regex":
        if not isinstance(value, str):
            raise ConstraintError("regex", "expected a regular expression (text)")
        return Matcher.grammar_from_regex(value)
    if kind == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
            raise ConstraintError("choice", "expected a list of one or more non-empty strings")
        # Lark string literals take JSON's escapes, so each choice is matched exactly as written.
        return Matcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
    if kind == "grammar":
        if not isinstance(value, str) or not value.strip():
            raise ConstraintError("grammar", "expected a Lark or GBNF grammar (text)")
        from llguidance.gbnf_to_lark import any_to_lark
        try:
            return Matcher.grammar_from_lark(any_to_lark(value))
        except Exception as exc:   # the converter raises its own error types
            raise ConstraintError("grammar", str(exc)[:_MESSAGE_CHARS]) from None
    raise ConstraintError("structured output", f"expected one of {', '.join(KINDS)}, got {kind!r}")


def constraint_chars(kind: str, value: Any) -> int:
    """A constraint's size in characters, as its limit counts it: the schema's JSON text, the
    regex or grammar, the choices together."""
    if isinstance(value, str):
        return len(value)
    if kind == "choice" and isinstance(value, list):
        return sum(len(c) for c in value if isinstance(c, str))
    try:
        return len(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        raise ConstraintError(kind, "expected a JSON schema that JSON can write (and not nested too deeply)") from None


def compile_constraint(guidance, kind: str, value: Any, vocab_size: int, limit: int = MAX_CONSTRAINT_CHARS,
                       limit_name: str = "") -> "TokenConstraint":
    """grammar_for and TokenConstraint on a thread of COMPILE_STACK_BYTES (see there): the
    compiled constraint, or what either raised. A constraint over `limit` characters (at most
    MAX_CONSTRAINT_CHARS, what the stack is sized for; `limit_name`: where it is set) is a
    ConstraintError before anything compiles."""
    limit = min(limit, MAX_CONSTRAINT_CHARS)
    if (chars := constraint_chars(kind, value)) > limit:
        raise ConstraintError(kind, f"{chars} characters; the limit is {limit}{limit_name and f' ({limit_name})'}")
    out: dict[str, Any] = {}

    def run():
        try:
            out["value"] = TokenConstraint(guidance, grammar_for(kind, value), vocab_size)
        except BaseException as exc:   # noqa: BLE001 - raised again in the caller's thread
            out["error"] = exc

    with _stack_lock:   # threading.stack_size is the process's: set only while this thread starts
        previous = threading.stack_size(COMPILE_STACK_BYTES)
        try:
            thread = threading.Thread(target=run, name="dwserve-grammar", daemon=True)
            thread.start()
        finally:
            threading.stack_size(previous)
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class _ByteVocabulary:
    """A tokenizer without tokenizer.json (lfm2-demo's bytes) as llguidance's TokenizerWrapper
    reads one: each id's bytes (a special id: none), eos/bos, and bytes -> ids."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.eos_token_id = getattr(tokenizer, "eos_token_id", None)
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        spell = getattr(tokenizer, "token_bytes", None) or (lambda i: tokenizer.decode([i]).encode("utf-8"))
        self.tokens = [spell(i) for i in range(vocab_size)]
        self.special_token_ids = [i for i, b in enumerate(self.tokens) if not b]

    def __call__(self, data: bytes) -> list[int]:
        return self.tokenizer.encode(data.decode("utf-8", "replace"), add_special_tokens=False)


def guidance_tokenizer(tokenizer, vocab_size: int, eos_ids: tuple[int, ...]):
    """llguidance's view of a model's tokenizer (its masks are vocab_size bits; every eos id
    ends a complete text), built once per tokenizer (a 65536-token tokenizer.json: ~1 s)."""
    llg = _llguidance()
    key = (vocab_size, tuple(eos_ids))
    with _lock:
        cached = getattr(tokenizer, "_guidance", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        eos = list(eos_ids) or None
        if hasattr(tokenizer, "tokenizer_json"):   # HFTokenizer: the Rust tokenizer, as loaded
            built = llg.LLTokenizer(tokenizer.tokenizer_json(), n_vocab=vocab_size, eos_token=eos)
        else:
            built = llg.LLTokenizer(llg.TokenizerWrapper(_ByteVocabulary(tokenizer, vocab_size)),
                                    n_vocab=vocab_size, eos_token=eos)
        tokenizer._guidance = (key, built)
        return built


class TokenConstraint:
    """One sequence's place in its grammar: allowed(device) -> (V,) bool of the tokens that may
    come next, advance(token) after one is drawn, `complete` once nothing more may follow."""

    def __init__(self, guidance, grammar: str, vocab_size: int):
        llg = _llguidance()
        self.matcher = llg.LLMatcher(guidance, grammar, log_level=0)
        if self.matcher.is_error():
            raise ConstraintError("structured output", self.matcher.get_error()[:_MESSAGE_CHARS])
        self._buffers(vocab_size)
        # The first mask builds llguidance's lexer states, which copies share: for some
        # grammars the slow part (a{1000000}: 0.35 s here, then 6 ms per copy's first mask).
        # Built now, where the grammar is compiled (the service: a worker thread before the
        # request queues), not in the engine's step, which every live sequence waits on.
        self.allowed("cpu")

    def _buffers(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._bitmask = torch.empty((vocab_size + 31) // 32, dtype=torch.int32)   # 1 bit per token id
        self._shifts = torch.arange(32, dtype=torch.int32)

    def copy(self) -> "TokenConstraint":
        """Another sequence's constraint at this one's place in the grammar, without compiling
        it again (llguidance's deep copy: microseconds, where compiling a large schema takes
        ~0.1 s)."""
        other = object.__new__(type(self))
        other.matcher = self.matcher.deep_copy()
        other._buffers(self.vocab_size)
        return other

    def allowed(self, device) -> torch.Tensor:
        """(V,) bool: the tokens that keep the text in the language (an eos id where it may end)."""
        m = self._bitmask
        self.matcher.unsafe_compute_mask_ptr(m.data_ptr(), m.numel() * m.element_size())
        bits = ((m[:, None] >> self._shifts) & 1).bool()                          # (V/32, 32): id 32i + b
        return bits.reshape(-1)[:self.vocab_size].to(device)

    def advance(self, token: int) -> None:
        self.matcher.consume_token(token)

    @property
    def error(self) -> str | None:
        """What stopped the matcher mid-output (a limit of llguidance's lexer or parser hit:
        'too many expressions constructed'), or None. It is then `complete` (the sequence ends)
        but its text is not in the language."""
        return self.matcher.get_error().split("\n", 1)[0][:_MESSAGE_CHARS] if self.matcher.is_error() else None

    @property
    def complete(self) -> bool:
        """Nothing may follow (or the matcher failed: a token it did not allow was forced)."""
        return self.matcher.is_stopped() or self.matcher.is_error()
