"""Validate the `reflect` task's kwargs before anything becomes a path or a query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reflection import constants as c
from reflection.errors import BadRequestError
from reflection.models import ReflectRequest

_FIELDS = {
    "original_job_id": c.JOB_ID_RE,
    "user_id": c.USER_ID_RE,
    "piece_name": c.SLUG_RE,
}


def safe_id(value: object, limit: int = c.MAX_ID_IN_METRICS) -> str:
    """A printable, bounded rendering of an untrusted id, for metrics rows and logs."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit * 4])
    return text[:limit] or "?"


def parse_request(kwargs: Mapping[str, Any]) -> ReflectRequest:
    """The task's kwargs as a `ReflectRequest`, or `BadRequestError` saying what is wrong."""
    expected = set(_FIELDS) | {"outcome"}
    missing = sorted(expected - set(kwargs))
    extra = sorted(set(kwargs) - expected)
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {extra}"] if extra else []
        )
        raise BadRequestError("bad kwargs: " + "; ".join(parts))
    for field, pattern in _FIELDS.items():
        value = kwargs[field]
        if not isinstance(value, str):
            raise BadRequestError(f"{field} must be a string, got {type(value).__name__}")
        if not pattern.fullmatch(value):
            raise BadRequestError(f"{field} {safe_id(value, 64)!r} is not a valid id")
    if kwargs["outcome"] not in c.OUTCOMES:
        raise BadRequestError(f"outcome must be one of {list(c.OUTCOMES)}")
    return ReflectRequest.model_validate(dict(kwargs))
