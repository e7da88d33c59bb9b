"""Structured outputs on the wire (models/lfm2/structured.py holds the text to them):
vLLM's `structured_outputs` object (StructuredOutputsParams' names) on /v1/generate and the
OpenAI routes, and on the OpenAI routes also OpenAI's `response_format` (json_object,
json_schema) and vLLM's older `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`.
One constraint per request: two forms at once are a 400 naming them.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .schema_types import Text

MAX_CHOICES = 256   # strings of a `choice` constraint


class StructuredOutputs(BaseModel):
    """Exactly one of: json (a JSON schema), json_object (true: any JSON object), regex (the
    whole output matches it), choice (exactly one of the strings), grammar (Lark or GBNF)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    json_schema: Optional[Union[dict[str, Any], Text]] = Field(
        None, alias="json", description="a JSON schema (object, or its JSON text) the output must match")
    json_object: Optional[bool] = Field(None, description="true: the output is a JSON object")
    regex: Optional[Text] = Field(None, description="a regular expression the whole output matches")
    choice: Optional[list[Text]] = Field(None, min_length=1, max_length=MAX_CHOICES,
                                         description="the output is exactly one of these strings")
    grammar: Optional[Text] = Field(None, description="a Lark (or llama.cpp GBNF) grammar of the output")
    # Where the request gave it, when not as structured_outputs (guided_regex, response_format's
    # schema): what an error about it names, as the client called it (`path`).
    _sent_as: Optional[str] = PrivateAttr(None)

    @model_validator(mode="after")
    def _exactly_one(self) -> "StructuredOutputs":
        given = self.given()
        if len(given) != 1:
            raise ValueError("structured_outputs: expected exactly one of json, json_object (true), regex, "
                             f"choice, grammar; got {', '.join(k for k, _ in given) or 'none'}")
        return self

    def given(self) -> list[tuple[str, Any]]:
        """[(kind, value)] of what is set, as models.lfm2.structured.grammar_for takes them."""
        fields = (("json", self.json_schema), ("json_object", self.json_object or None), ("regex", self.regex),
                  ("choice", self.choice), ("grammar", self.grammar))
        return [(k, v) for k, v in fields if v is not None]

    @property
    def kind(self) -> tuple[str, Any]:
        return self.given()[0]

    def sent_as(self, path: str) -> "StructuredOutputs":
        self._sent_as = path
        return self

    @property
    def path(self) -> str:
        """The constraint's value in the client's request, for its errors: structured_outputs.regex,
        guided_regex, response_format.json_schema.schema; its first part the request field."""
        return self._sent_as or f"structured_outputs.{self.kind[0]}"


_RESPONSE_FORMAT_FIELDS = {"text": {"type"}, "json_object": {"type"}, "json_schema": {"type", "json_schema"}}
_JSON_SCHEMA_FIELDS = {"name", "description", "schema", "strict"}   # OpenAI's json_schema object


def from_response_format(response_format: Optional[dict[str, Any]]) -> Optional[StructuredOutputs]:
    """OpenAI's response_format -> the constraint ({"type": "text"} or none: no constraint), held to
    OpenAI's shape as OpenAI and vLLM hold it: no unknown fields, json_schema's `name` required."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind not in _RESPONSE_FORMAT_FIELDS:
        raise ValueError(f"response_format: expected type text, json_object or json_schema, got {kind!r}")
    extra = sorted(set(response_format) - _RESPONSE_FORMAT_FIELDS[kind])
    if extra:
        raise ValueError(f"response_format: unknown field(s) {extra} for type {kind!r}")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutputs(json_object=True).sent_as("response_format")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(schema, dict) or not isinstance(name, str) or not name:
        raise ValueError("response_format: json_schema expects {\"name\": a name, \"schema\": {a JSON schema}}")
    extra = sorted(set(spec) - _JSON_SCHEMA_FIELDS)
    if extra:
        raise ValueError(f"response_format: unknown json_schema field(s) {extra} (OpenAI's: "
                         f"{', '.join(sorted(_JSON_SCHEMA_FIELDS))})")
    return StructuredOutputs(json=schema).sent_as("response_format.json_schema.schema")


def pick_one(**forms: Optional[StructuredOutputs]) -> Optional[StructuredOutputs]:
    """The one constraint a request gives among its forms (field name -> constraint or None);
    two at once is a ValueError naming them."""
    given = {name: c for name, c in forms.items() if c is not None}
    if len(given) > 1:
        raise ValueError(f"{', '.join(given)}: give one structured output constraint, not several")
    return next(iter(given.values()), None)
