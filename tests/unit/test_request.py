"""Task kwargs are validated before anything becomes a path or a query."""

from __future__ import annotations

from typing import Any

import pytest

from reflection.errors import BadRequestError
from reflection.request import parse_request, safe_id

GOOD = {
    "original_job_id": "7f3c-91",
    "user_id": "u42",
    "piece_name": "default",
    "outcome": "failed",
}


def test_good_kwargs() -> None:
    """Valid kwargs come back as a ReflectRequest."""
    assert parse_request(GOOD).outcome == "failed"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"user_id": None}, "must be a string"),
        ({"user_id": 42}, "must be a string"),
        ({"user_id": "../root"}, "not a valid id"),
        ({"user_id": "a/b"}, "not a valid id"),
        ({"user_id": "a\x00b"}, "not a valid id"),
        ({"user_id": "x" * 200}, "not a valid id"),
        (
            {
                "original_job_id": "..",
            },
            "not a valid id",
        ),
        ({"original_job_id": "job\n1"}, "not a valid id"),
        ({"piece_name": "Default"}, "not a valid id"),
        ({"piece_name": "../pieces/x"}, "not a valid id"),
        ({"outcome": "exploded"}, "outcome must be one of"),
        ({"extra": 1}, "unexpected ['extra']"),
    ],
)
def test_bad_kwargs(change: dict[str, Any], fragment: str) -> None:
    """Each kind of bad kwarg is refused with a message that says what is wrong."""
    with pytest.raises(BadRequestError) as e:
        parse_request(GOOD | change)
    assert fragment in str(e.value)


def test_missing_kwargs() -> None:
    """Missing kwargs are named."""
    with pytest.raises(BadRequestError, match="missing"):
        parse_request({"user_id": "u"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "abc"), ("a\nb", "a?b"), (None, "None"), ("", "?"), ("x" * 500, "x" * 128)],
)
def test_safe_id(value: object, expected: str) -> None:
    """Untrusted ids are printable and bounded before they reach a row or a log."""
    assert safe_id(value) == expected
