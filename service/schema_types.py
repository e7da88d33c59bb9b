"""The field types of the request schemas (schemas.py, schemas_openai.py,
schemas_structured.py): numbers that a JSON true/false is not, token ids, and text that is
valid Unicode (JSON's escapes can carry a lone UTF-16 surrogate, which no tokenizer encodes).

The Strict* forms take a value only in its own JSON type (no "3" for 3, no 1 or "yes" for true,
no 3.0 for an integer): /v1/generate's own request uses them, where a client's wrong type is a
mistake to name. The OpenAI and Triton generate schemas keep pydantic's lax parsing, as the
servers whose clients they serve do (vLLM's OpenAI server; Triton's string-typed parameters).
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict
from pydantic_core import PydanticCustomError


def _not_bool(value: Any) -> Any:
    """pydantic's lax int/float take true/false as 1/0; JSON booleans are not numbers."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "expected a number, got {value}", {"value": str(value).lower()})
    return value


def _not_bool_token(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("token_id_not_bool", "token ids must be integers, got {value}",
                                  {"value": str(value).lower()})
    return value


def unicode_problem(value: str) -> str | None:
    """Why the tokenizer cannot encode `value`, or None: JSON's \\ud800-style escapes can carry
    half of a UTF-16 surrogate pair, which is no character (UTF-8 cannot encode it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"expected valid Unicode text; \\u{ord(value[exc.start]):04x} at index {exc.start} is a lone "
                "UTF-16 surrogate (escape a character outside the BMP as both halves of its pair, or send it as UTF-8)")
    return None


def _unicode_text(value: str) -> str:
    problem = unicode_problem(value)
    if problem is not None:
        raise PydanticCustomError("lone_surrogate", problem.replace("{", "{{").replace("}", "}}"))
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
TokenId = Annotated[int, BeforeValidator(_not_bool_token)]
Text = Annotated[str, AfterValidator(_unicode_text)]
StrictInt = Annotated[int, BeforeValidator(_not_bool), Strict()]
StrictFloat = Annotated[float, BeforeValidator(_not_bool), Strict()]    # an integer is a number too
StrictTokenId = Annotated[int, BeforeValidator(_not_bool_token), Strict()]
StrictBool = Annotated[bool, Strict()]
