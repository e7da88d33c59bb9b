"""A checkpoint's generation_config.json: its stop ids and its sampling defaults.

transformers' generate() takes both from the file (what a call leaves out), and vLLM serves
the sampling ones as request defaults (`--generation-config auto`, its default). Here:

- `eos_token_id` (an id or a list) becomes the config's stop ids (loading.py);
- `do_sample`, `temperature`, `top_k`, `top_p`, `min_p`, `repetition_penalty` become the
  model's `generation_defaults` (a dict holding the ones the file gives), which generate()
  and the server's generate routes (--generation-config) fill what a caller leaves out with.

A value out of its range is a ValueError naming the file and the field (the checkpoint is
refused, as a bad config.json is), not a surprise at the first request.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .logit_processing import REPETITION_RANGE

FILE = "generation_config.json"
SAMPLING_FIELDS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")
# transformers' own defaults for what neither the call nor the file gives (GenerationConfig's
# global defaults): a do_sample=True call samples at temperature 1.0 from the 50 most likely.
TRANSFORMERS_SAMPLING = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None, "repetition_penalty": 1.0}


def read(path) -> dict:
    """The JSON object in generation_config.json under directory path; {} when there is none."""
    file = Path(path) / FILE
    if not file.is_file():
        return {}
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e}); fix it or remove it") from None
    if not isinstance(d, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(d).__name__}; fix it or remove it")
    return d


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_CHECKS = {   # field -> (valid?, what is expected)
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "top_k": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0 (0 = off)"),
    "top_p": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "min_p": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "repetition_penalty": (lambda v: _number(v) and REPETITION_RANGE[0] < v <= REPETITION_RANGE[1],
                           f"a number in ({REPETITION_RANGE[0]:g}, {REPETITION_RANGE[1]:g}]"),
}


def sampling_defaults(d: dict, where: str = FILE) -> dict:
    """The sampling fields d gives (null ones left out), checked; top_k 0 and top_p 1 kept
    as given (both mean off)."""
    out = {}
    for name in SAMPLING_FIELDS:
        value = d.get(name)
        if value is None:
            continue
        ok, expected = _CHECKS[name]
        if not ok(value):
            raise ValueError(f"{where}: {name} must be {expected}, got {value!r}; fix it or remove it")
        out[name] = value
    return out
