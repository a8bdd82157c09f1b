"""Retry timing as pure functions: exponential backoff with full jitter, and `Retry-After`."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_RNG = random.Random()
_MAX_EXPONENT = 62  # 2**62 already dwarfs any cap; keeps the float math finite.


def compute_backoff(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """The delay before retry number `attempt` (1 = after the first failure).

    Full jitter: uniform in [0, min(cap, base * 2**(attempt - 1))], so a fleet of workers
    hit by the same outage does not retry in lockstep. Never above `cap`."""
    if attempt < 1:
        raise ValueError(f"attempt starts at 1, got {attempt}")
    if base < 0 or cap < 0 or not (math.isfinite(base) and math.isfinite(cap)):
        raise ValueError("base and cap must be finite and >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    delay = (rng or _RNG).uniform(0.0, ceiling)
    return min(max(delay, 0.0), cap)


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """How long the server asked us to wait, in seconds, or None when it did not say.

    Reads `retry-after-ms` (milliseconds, preferred when valid) and `Retry-After` (seconds
    or an HTTP-date, relative to `now`). Garbage yields None; a past date or a negative
    number yields 0."""
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    millis = _number(lowered.get("retry-after-ms"))
    if millis is not None:
        return max(millis / 1000.0, 0.0)
    value = lowered.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    return _seconds_until(value, now)


def _number(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds_until(http_date: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    delta = (when - now).total_seconds()
    return max(delta, 0.0)
