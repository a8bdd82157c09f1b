"""Retry timing: exponential backoff with full jitter, and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from reflection.backoff import compute_backoff, retry_after_seconds

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


class _MaxRandom(random.Random):
    """Always draws the top of the range, to see the exponential ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (1, 1.0, 20.0, 1.0),
        (2, 1.0, 20.0, 2.0),
        (3, 1.0, 20.0, 4.0),
        (5, 1.0, 20.0, 16.0),
        (6, 1.0, 20.0, 20.0),
        (10_000, 1.0, 20.0, 20.0),
        (3, 0.5, 100.0, 2.0),
        (4, 0.0, 20.0, 0.0),
        (1, 5.0, 0.0, 0.0),
    ],
)
def test_ceiling_doubles_per_attempt_up_to_the_cap(
    attempt: int, base: float, cap: float, ceiling: float
) -> None:
    """The jitter range is [0, min(cap, base * 2**(attempt-1))], even for huge attempts."""
    assert compute_backoff(attempt, base=base, cap=cap, rng=_MaxRandom()) == ceiling


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 8, 30, 1000])
def test_jitter_stays_within_zero_and_cap(attempt: int) -> None:
    """Full jitter: every draw is between 0 and the capped ceiling."""
    rng = random.Random(attempt)
    ceiling = min(3.0, 0.25 * 2 ** min(attempt - 1, 62))
    draws = [compute_backoff(attempt, base=0.25, cap=3.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert len(set(draws)) > 1 or ceiling == 0


def test_seeded_rng_is_deterministic() -> None:
    """The same seed gives the same delays (tests can pin the jitter)."""
    a = [compute_backoff(n, base=1, cap=10, rng=random.Random(7)) for n in range(1, 6)]
    b = [compute_backoff(n, base=1, cap=10, rng=random.Random(7)) for n in range(1, 6)]
    assert a == b


def test_default_rng_is_used_without_one() -> None:
    """Without an rng the module's own generator is used, still within bounds."""
    assert 0.0 <= compute_backoff(2, base=1.0, cap=1.5) <= 1.5


@pytest.mark.parametrize(
    ("attempt", "base", "cap"),
    [(0, 1.0, 1.0), (-3, 1.0, 1.0), (1, -1.0, 1.0), (1, 1.0, -1.0), (1, float("inf"), 1.0)],
)
def test_invalid_arguments_are_refused(attempt: int, base: float, cap: float) -> None:
    """Attempt below 1, negative or infinite base/cap: ValueError."""
    with pytest.raises(ValueError):
        compute_backoff(attempt, base=base, cap=cap)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 3 "}, 3.0),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"retry-after-ms": "junk", "Retry-After": "9"}, 9.0),
        ({"Retry-After": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"Retry-After": format_datetime(NOW - timedelta(minutes=5), usegmt=True)}, 0.0),
        ({"Retry-After": "Tue, 24 Nov 2026 12:00:10 GMT"}, 10.0),
        ({"Retry-After": "Tue, 99 Nov 2026 12:00:10 GMT"}, None),
        ({"Content-Type": "application/json"}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, milliseconds and HTTP-dates are read; garbage is None; the past is 0."""
    assert retry_after_seconds(headers, now=NOW) == expected


def test_retry_after_date_without_now_uses_the_clock() -> None:
    """An HTTP-date far in the future yields a large positive wait against the real clock."""
    when = datetime.now(UTC) + timedelta(hours=1)
    seconds = retry_after_seconds({"Retry-After": format_datetime(when, usegmt=True)})
    assert seconds is not None and 3500 < seconds <= 3600


def test_naive_now_is_taken_as_utc() -> None:
    """A naive `now` is read as UTC rather than crashing on the comparison."""
    naive = NOW.replace(tzinfo=None)
    headers = {"Retry-After": "Tue, 24 Nov 2026 12:00:05 GMT"}
    assert retry_after_seconds(headers, now=naive) == 5.0
