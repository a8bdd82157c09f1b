"""Read the LLM's reply into its decision (`LlmDecision`): pure functions, no I/O.

A reply may be clean JSON, JSON inside a code fence, or an object inside chatter. The
scanner is linear and bounded (size, nesting depth, candidates) so hostile replies cannot
hang or crash it; duplicate keys are refused rather than silently resolved.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from reflection.constants import MAX_LLM_REPLY_CHARS
from reflection.models import LlmDecision

MAX_JSON_DEPTH = 20
# Inside strings only escapes and quotes matter; outside them only quotes and brackets.
_SCAN_RE = re.compile(r'\\.|["{}\[\]]', re.DOTALL)
_FENCE_RE = re.compile(r"```[A-Za-z]*[ \t]*\r?\n(.*?)```", re.DOTALL)
_MAX_CANDIDATES = 8
_MAX_LISTED_ERRORS = 10


class DecisionParseError(ValueError):
    """Raised when a reply is not a valid decision; the message can be sent to the model."""


def decision_json_schema() -> dict[str, Any]:
    """The JSON schema of `LlmDecision`, for `response_format` (a fresh copy each call)."""
    return copy.deepcopy(_schema())


@functools.cache
def _schema() -> dict[str, Any]:
    # Generating it costs ~3 ms, a tenth of a whole run's CPU; it never changes.
    return LlmDecision.model_json_schema()


def parse_decision(text: str) -> LlmDecision:
    """Validate a reply: the whole text as JSON, else the object found in it."""
    obj = _load_object(text)
    try:
        return LlmDecision.model_validate(obj)
    except ValidationError as e:
        raise DecisionParseError(_describe_validation(e)) from e


def extract_json_object(text: str) -> str | None:
    """The first balanced top-level `{...}` in `text` (a fenced block first), string-aware.

    Prefers the first candidate that is valid JSON; else returns the first balanced one."""
    for fenced in _FENCE_RE.findall(text):
        found = _first_object(fenced)
        if found is not None:
            return found
    return _first_object(text)


def _load_object(text: str) -> dict[str, Any]:
    if len(text) > MAX_LLM_REPLY_CHARS:
        raise DecisionParseError(
            f"the reply is {len(text)} characters long; the limit is {MAX_LLM_REPLY_CHARS}"
        )
    stripped = text.strip()
    if not stripped:
        raise DecisionParseError("the reply was empty; answer with one JSON object")
    if stripped[0] in "{[":
        try:
            return _as_object(_strict_loads(stripped))
        except json.JSONDecodeError:
            pass  # prose after the object, or not JSON at all: look for the object
    candidate = extract_json_object(stripped)
    if candidate is None or not _is_json(candidate):
        # A stray quote in the prose before it (`2" margins`) hides the object from the
        # string-aware scan: try each opening brace instead.
        candidate = _object_at_some_brace(stripped) or candidate
    if candidate is None:
        raise DecisionParseError("no JSON object found in the reply; answer with one JSON object")
    try:
        return _as_object(_strict_loads(candidate))
    except json.JSONDecodeError as e:
        raise DecisionParseError(
            f"the JSON object is malformed: {e.msg} (line {e.lineno}, column {e.colno})"
        ) from e


def _strict_loads(text: str) -> Any:
    depth = _max_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise DecisionParseError(
            f"the JSON is nested {depth} levels deep; a decision needs at most {MAX_JSON_DEPTH}"
        )
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecisionParseError(f"duplicate key {key[:60]!r}: each key may appear once")
        out[key] = _writable(value) if isinstance(value, str) else value
    return out


def _writable(text: str) -> str:
    """`text` with any lone surrogate (legal JSON, "\\ud800") replaced by "?": it cannot be
    written as UTF-8, so a body, a piece or the reasoning holding one would fail the run."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise DecisionParseError(f"the reply must be one JSON object, not a JSON {kind}")
    return value


def _structure(text: str) -> Iterator[tuple[int, str]]:
    """(index, char) of every bracket outside JSON strings."""
    in_string = False
    for m in _SCAN_RE.finditer(text):
        tok = m.group()
        if in_string:
            in_string = tok != '"'
            continue
        if tok[0] == "\\":  # outside a string an escape means nothing; see its char
            tok = tok[1]
        if tok == '"':
            in_string = True
        elif tok in "{}[]":
            yield m.end() - 1, tok


def _max_depth(text: str) -> int:
    depth = deepest = 0
    for _, char in _structure(text):
        depth = depth + 1 if char in "{[" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _first_object(text: str) -> str | None:
    stack: list[int] = []
    spans: list[tuple[int, int]] = []
    for index, char in _structure(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            spans.append((stack.pop(), index + 1))
    if not spans:
        return None
    spans.sort()
    for start, end in spans[:_MAX_CANDIDATES]:
        if _is_json(text[start:end]):
            return text[start:end]
    start, end = spans[0]
    return text[start:end]


def _object_at_some_brace(text: str) -> str | None:
    """The first JSON object that starts at one of the first braces of `text`."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(_MAX_CANDIDATES):
        if start < 0:
            return None
        try:
            _, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
            continue
        return text[start:end]
    return None


def _is_json(candidate: str) -> bool:
    try:
        json.loads(candidate)
    except (ValueError, RecursionError):
        return False
    return True


def _describe_validation(e: ValidationError) -> str:
    errors = e.errors(include_url=False, include_input=False)
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
        for err in errors[:_MAX_LISTED_ERRORS]
    ]
    if len(errors) > _MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_LISTED_ERRORS} more errors")
    return "the JSON object does not match the decision schema: " + "; ".join(parts)
