"""The LLM circuit breaker's decisions, as tables: the gate before a call, how a call
ended, the state's next move, and how long a deferred run waits."""

from __future__ import annotations

import random

import pytest

from reflection.breaker import (
    MIN_DELAY_SECONDS,
    Ended,
    Gate,
    Move,
    defer_delay,
    ended_by,
    gate,
    move,
    probe_lease_seconds,
)
from reflection.errors import (
    ContextOverflowError,
    InfrastructureError,
    LlmAuthError,
    LlmInvalidOutputError,
    LlmUnavailableError,
    LlmUnreachableError,
    TimeLimitError,
)
from reflection.settings import Settings

H = 3600.0


@pytest.mark.parametrize(
    ("is_open", "got_probe", "waited", "window", "expected"),
    [(False, False, 0, 6 * H, Gate.CALL),
     (False, False, 9 * H, 6 * H, Gate.CALL),       # closed: a window does not matter
     (True, True, 0, 6 * H, Gate.PROBE),
     (True, True, 7 * H, 6 * H, Gate.PROBE),        # past its window, still the probe
     (True, True, 0, 0, Gate.PROBE),                # a window of 0 still closes it
     (True, False, 0, 6 * H, Gate.DEFER),
     (True, False, 6 * H - 1, 6 * H, Gate.DEFER),
     (True, False, 6 * H, 6 * H, Gate.GIVE_UP),
     (True, False, 0, 0, Gate.GIVE_UP)],
)  # fmt: skip
def test_gate(is_open: bool, got_probe: bool, waited: float, window: float, expected: Gate) -> None:
    """Closed: call. Open: the run holding the probe calls, the others defer until their
    window is over, then give up."""
    assert gate(is_open=is_open, got_probe=got_probe, waited=waited, window=window) is expected


@pytest.mark.parametrize(
    ("error", "ended"),
    [(None, Ended.ANSWERED),
     (LlmUnreachableError("failed after 4 attempts"), Ended.OUTAGE),
     (LlmUnavailableError("rejected the request (HTTP 418)"), Ended.ANSWERED),
     (LlmAuthError("refused the key"), Ended.ANSWERED),
     (LlmInvalidOutputError("did not validate"), Ended.ANSWERED),
     (ContextOverflowError("too long"), Ended.ANSWERED),
     (TimeLimitError("late"), Ended.OTHER),
     (InfrastructureError("redis down"), Ended.OTHER),
     (KeyError("a bug"), Ended.OTHER)],
    ids=lambda v: type(v).__name__ if not isinstance(v, Ended) else v.value,
)  # fmt: skip
def test_ended_by(error: BaseException | None, ended: Ended) -> None:
    """Only attempts that all failed are an outage; any answer, even a refusal, shows
    the endpoint is up; the run's own stops say nothing about it."""
    assert ended_by(error) is ended


@pytest.mark.parametrize(
    ("ended", "saw_open", "probing", "expected"),
    [(Ended.ANSWERED, False, False, Move.STAY),    # the common case writes nothing
     (Ended.ANSWERED, True, True, Move.CLOSE),     # a successful probe closes it
     (Ended.ANSWERED, True, False, Move.CLOSE),
     (Ended.OUTAGE, False, False, Move.OPEN),      # the first outage opens it
     (Ended.OUTAGE, True, True, Move.OPEN),        # a failed probe: wait for the next
     (Ended.OTHER, True, True, Move.FREE_PROBE),   # a probe that stopped frees the probe
     (Ended.OTHER, False, False, Move.STAY)],
)  # fmt: skip
def test_move(ended: Ended, saw_open: bool, probing: bool, expected: Move) -> None:
    """How the breaker's state moves after a call."""
    assert move(ended, saw_open=saw_open, probing=probing) is expected


@pytest.mark.parametrize(
    ("interval", "left", "max_delay", "low", "high"),
    [(30, 6 * H, 600, 24, 36),        # about the probe interval, spread ± 20 %
     (30, 10, 600, 10, 10),           # never past the run's window
     (30, 0.01, 600, MIN_DELAY_SECONDS, MIN_DELAY_SECONDS),
     (600, 6 * H, 120, 120, 120)],    # never past the broker's bound on a countdown
)  # fmt: skip
def test_defer_delay(
    interval: float, left: float, max_delay: float, low: float, high: float
) -> None:
    """A deferred run comes back after about one probe interval, within its bounds."""
    rng = random.Random(7)
    for _ in range(50):
        delay = defer_delay(interval=interval, left=left, max_delay=max_delay, rng=rng)
        assert low <= delay <= high


def test_the_probe_lease_covers_every_attempt_within_the_time_limit() -> None:
    """A probe holds the probe key as long as its call can take (every attempt timing out
    after the longest backoff), never past the run's soft time limit."""
    s = Settings(llm_timeout_seconds=60, llm_max_attempts=4, llm_backoff_max_seconds=20)
    assert probe_lease_seconds(s) == 60 * 4 + 3 * 20 * 3 + 5
    short = Settings(task_time_limit=60, llm_timeout_seconds=60, llm_max_attempts=4)
    assert probe_lease_seconds(short) == short.soft_time_limit + 5
