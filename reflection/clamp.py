"""Values from the LLM endpoint made safe to store (issue 22, item 6): pure.

The endpoint is not trusted. Its `usage` counts go into int32 columns: a count of 2**31
passed validation, the memory files were written, the insert failed, and every later
run of that user failed the same way, retried as an outage forever. Counts are clamped
to 0..INT32_MAX here; a model name that is not a plausible model name (too long, control
characters, NUL) is replaced by the configured one. `clamp_record` is the last resort of
a journal whose rows Postgres refused anyway (`reflection.apply`).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
MAX_MODEL_NAME_CHARS = 128
# Model ids as endpoints report them (`gpt-4o-mini-2024-07-18`, `meta-llama/Llama-3.1-8B`,
# `ft:gpt-4o:org::id`, `llama3.1:8b`, a llama.cpp file path): printable ASCII without
# spaces, so no control, bidi or NUL character, nothing a terminal or Postgres minds.
MODEL_NAME_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_MODEL_NAME_CHARS}}}")

R = TypeVar("R", bound=BaseModel)


def clamp_count(value: object) -> int:
    """A token count as stored: an int clamped to 0..INT32_MAX; anything that is not an
    int (a float, a string, None, a bool) counts 0."""
    if not isinstance(value, int) or isinstance(value, bool):
        return 0
    return min(max(value, 0), INT32_MAX)


def model_name(value: object, default: str) -> str:
    """The endpoint's model name if it is one, else `default` (the configured model)."""
    if isinstance(value, str) and MODEL_NAME_RE.fullmatch(value):
        return value
    return default


def clamp_value(value: Any) -> Any:
    """`value` with every int clamped to int32 and every NUL character dropped from its
    strings, through dicts, lists and tuples (what Postgres' integer, text and jsonb
    columns refuse)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return min(max(value, INT32_MIN), INT32_MAX)
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {clamp_value(k): clamp_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clamp_value(v) for v in value)
    return value


def clamp_record(record: R) -> R:
    """A row model with `clamp_value` applied to every field."""
    return type(record).model_validate(clamp_value(record.model_dump()))
