"""Per-user slots (fakeredis with Lua; the real Redis runs them in integration and e2e)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from reflection import fairness
from reflection.constants import RUN_SECONDS_KEY, USER_DEFERRED_PREFIX, USER_SLOTS_PREFIX
from reflection.errors import UserBusyError
from reflection.fairness import (
    FIRST_GUESS_SECONDS,
    MIN_DELAY_SECONDS,
    RUN_SECONDS_TTL,
    SLACK,
    SMOOTHING,
    user_slot,
)


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_at_most_cap_runs_of_one_user(r: fakeredis.FakeRedis) -> None:
    with user_slot(r, "hot", "run-1", cap=2, lease_seconds=60):
        with user_slot(r, "hot", "run-2", cap=2, lease_seconds=60):
            with (
                pytest.raises(UserBusyError) as first,
                user_slot(r, "hot", "run-3", cap=2, lease_seconds=60),
            ):
                pass
            with (
                pytest.raises(UserBusyError) as second,
                user_slot(r, "hot", "run-4", cap=2, lease_seconds=60),
            ):
                pass
            assert second.value.delay > first.value.delay > 0
            with user_slot(r, "other", "run-5", cap=2, lease_seconds=60):
                pass  # other users are not affected
        with user_slot(r, "hot", "run-3", cap=2, lease_seconds=60):
            pass  # a slot was freed
    assert r.zcard(USER_SLOTS_PREFIX + "hot") == 0


def test_a_retry_of_the_same_run_keeps_its_slot(r: fakeredis.FakeRedis) -> None:
    with (
        user_slot(r, "u", "run-1", cap=1, lease_seconds=60),
        user_slot(r, "u", "run-1", cap=1, lease_seconds=60),
    ):
        pass


def test_a_dead_runs_slot_ages_out(r: fakeredis.FakeRedis) -> None:
    r.zadd(USER_SLOTS_PREFIX + "u", {"crashed-run": time.time() - 120})
    with user_slot(r, "u", "run-2", cap=1, lease_seconds=60):
        assert r.zrange(USER_SLOTS_PREFIX + "u", 0, -1) == [b"run-2"]


def test_the_slot_is_freed_when_the_run_raises(r: fakeredis.FakeRedis) -> None:
    with pytest.raises(RuntimeError), user_slot(r, "u", "run-1", cap=1, lease_seconds=60):
        raise RuntimeError("boom")
    with user_slot(r, "u", "run-2", cap=1, lease_seconds=60):
        pass


def test_cap_zero_means_no_limit(r: fakeredis.FakeRedis) -> None:
    with (
        user_slot(r, "u", "a", cap=0, lease_seconds=60),
        user_slot(r, "u", "b", cap=0, lease_seconds=60),
    ):
        assert r.exists(USER_SLOTS_PREFIX + "u") == 0


def _deferral(r: fakeredis.FakeRedis, user: str, run_id: str, cap: int, **kw: Any) -> float:
    with (
        pytest.raises(UserBusyError) as busy,
        user_slot(r, user, run_id, cap=cap, lease_seconds=600, **kw),
    ):
        pass
    return busy.value.delay


def _hold(r: fakeredis.FakeRedis, user: str, *started_ago: float) -> None:
    now = time.time()
    r.zadd(USER_SLOTS_PREFIX + user, {f"running-{i}": now - a for i, a in enumerate(started_ago)})


def _run(r: fakeredis.FakeRedis, user: str, took: float) -> None:
    with user_slot(r, user, "run", cap=1, lease_seconds=600):
        r.zadd(USER_SLOTS_PREFIX + user, {"run": time.time() - took})  # as if it began then


def test_deferred_runs_are_booked_one_after_another_at_the_rate_the_slots_free(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first comes back when the oldest run should end; each next one a run's
    length divided by the cap later; none is handed the same time as another."""
    frozen = time.time()  # the bookings are relative to now: a busy machine must not move it
    monkeypatch.setattr(fairness, "time", SimpleNamespace(time=lambda: frozen))
    r.zadd(USER_SLOTS_PREFIX + "hot", {"running-0": frozen - 0.4, "running-1": frozen})
    length = FIRST_GUESS_SECONDS * (1 + SLACK)
    delays = [_deferral(r, "hot", f"run-{i}", cap=2) for i in range(5)]
    expected = [length - 0.4 + i * length / 2 for i in range(5)]
    assert delays == pytest.approx(expected, abs=0.05)
    assert r.hget(USER_DEFERRED_PREFIX + "hot", "count") == b"5"


def test_a_finished_run_teaches_how_long_runs_hold_a_slot(r: fakeredis.FakeRedis) -> None:
    """Each release feeds a moving average, the user's and the fleet's; bookings use the
    user's, else the fleet's (a user's first burst), else the first guess."""
    _run(r, "alice", took=10.0)
    assert float(r.get(RUN_SECONDS_KEY + ":alice") or 0) == pytest.approx(10.0, abs=0.05)
    _run(r, "alice", took=20.0)
    average = 10.0 + SMOOTHING * (20.0 - 10.0)
    assert float(r.get(RUN_SECONDS_KEY + ":alice") or 0) == pytest.approx(average, abs=0.05)
    assert float(r.get(RUN_SECONDS_KEY) or 0) == pytest.approx(average, abs=0.05)
    assert 0 < r.ttl(RUN_SECONDS_KEY + ":alice") <= RUN_SECONDS_TTL  # not one key per user forever

    _hold(r, "bob", 0.0)  # no run of bob's has ended yet: the fleet's length
    assert _deferral(r, "bob", "b-1", cap=1) == pytest.approx(average * (1 + SLACK), abs=0.05)
    r.set(RUN_SECONDS_KEY + ":carol", "3.0")
    _hold(r, "carol", 0.0)
    assert _deferral(r, "carol", "c-1", cap=1) == pytest.approx(3.0 * (1 + SLACK), abs=0.05)


def test_a_deferral_waits_at_least_a_moment_and_at_most_the_longest_delay(
    r: fakeredis.FakeRedis,
) -> None:
    """A slot held past its run's usual length would book the next run for now: it
    would come straight back and spin. A long backlog is capped at `max_delay`."""
    _hold(r, "u", 30.0)
    assert _deferral(r, "u", "run-1", cap=1) == pytest.approx(MIN_DELAY_SECONDS, abs=0.05)
    r.set(RUN_SECONDS_KEY + ":u", "100")
    assert _deferral(r, "u", "run-2", cap=1, max_delay=60.0) == pytest.approx(60.0, abs=0.05)
    assert _deferral(r, "u", "run-3", cap=1, max_delay=60.0) == pytest.approx(60.0, abs=0.05)


def test_bookings_start_afresh_once_the_last_one_is_past(r: fakeredis.FakeRedis) -> None:
    _hold(r, "u", 0.0)
    r.hset(USER_DEFERRED_PREFIX + "u", "until", str(time.time() - 5))
    assert _deferral(r, "u", "run-1", cap=1) == pytest.approx(1 + SLACK, abs=0.05)


def test_a_slot_peeks_at_a_key_in_the_same_round_trip() -> None:
    """With `peek`, taking the slot also tells whether that key exists (the LLM breaker's),
    in the one script call; without a slot to take there is nothing to tell."""
    r = fakeredis.FakeRedis()
    with user_slot(r, "u", "run-1", cap=2, lease_seconds=60, peek="breaker") as slot:
        assert slot.peeked is False and slot.at > 0
    r.set("breaker", "1")
    with user_slot(r, "u", "run-2", cap=2, lease_seconds=60, peek="breaker") as slot:
        assert slot.peeked is True
    with user_slot(r, "u", "run-3", cap=2, lease_seconds=60) as slot:
        assert slot.peeked is None
    with user_slot(r, "u", "run-4", cap=0, lease_seconds=60, peek="breaker") as slot:
        assert slot.peeked is None


@pytest.mark.parametrize(
    ("peeked", "age", "seen"),
    [(False, 0.0, False), (True, 0.0, True), (True, 31.0, None), (False, 31.0, None),
     (None, 0.0, None)],
    ids=["closed", "open", "open-but-stale", "closed-but-stale", "not-peeked"],
)  # fmt: skip
def test_a_run_trusts_the_breaker_state_its_slot_saw_for_one_probe_interval(
    peeked: bool | None, age: float, seen: bool | None
) -> None:
    """The breaker's state read with the slot stands in for the LLM stage's own EXISTS
    while it is younger than the probe interval (30 s here); older, the stage asks."""
    from reflection.fairness import Slot
    from reflection.pipeline import _Run

    run = _Run("r1", {"original_job_id": "j1", "user_id": "u", "piece_name": "default"})
    run.slot = Slot(peeked=peeked, at=time.monotonic() - age)
    assert run.breaker_seen(30.0) is seen
