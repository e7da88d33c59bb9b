"""Chat templates: a conversation (a list of {"role", "content"} messages) -> the prompt text
the model was trained on, rendered the way Hugging Face's `apply_chat_template` renders it.

Where a template comes from:
  a checkpoint directory   `chat_template.jinja`, else `tokenizer_config.json["chat_template"]`
                           (a string, or a list of {"name", "template"}: the one named "default")
  lfm2-demo (byte-level)   DEFAULT_TEMPLATE: LFM2's ChatML turns without the bos text, which the
                           byte tokenizer adds as an id of its own

Templates run in jinja2's sandbox with the environment HF gives them (trim_blocks,
lstrip_blocks, loop controls, a `tojson` filter, `raise_exception`, `strftime_now`), so a
checkpoint's own template renders as it does under transformers (tests/test_chat.py checks
that against transformers). A template error, or a template's raise_exception, is a
ValueError naming the cause.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Optional

# LFM2's turn format (<|im_start|>role\n ... <|im_end|>\n), then the assistant's turn opened.
DEFAULT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def load_chat_template(directory) -> Optional[str]:
    """The chat template shipped in a checkpoint directory, or None."""
    directory = Path(directory)
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{config}: expected a JSON object ({exc})") from None
    if isinstance(template, list):   # named templates: the default one
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{config}: chat_template must be a string or a list of {{name, template}}")
    return template


def special_token_text(directory, key: str) -> Optional[str]:
    """tokenizer_config.json's bos_token / eos_token as text (a string or {"content": ...})."""
    config = Path(directory) / "tokenizer_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get(key)
    return value.get("content") if isinstance(value, dict) else value


def _raise_exception(message):
    from jinja2.exceptions import TemplateError
    raise TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """messages [{"role": str, "content": str}, ...] -> the prompt text."""
    from jinja2.exceptions import TemplateError

    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: expected a non-empty list of {role, content}")
    try:
        return _compile(template).render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                                         add_generation_prompt=add_generation_prompt, tools=None)
    except TemplateError as exc:
        raise ValueError(f"chat template: {exc}") from None
