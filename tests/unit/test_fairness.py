"""Per-user slots (fakeredis with Lua; the real Redis runs them in integration and e2e)."""

from __future__ import annotations

import time

import fakeredis
import pytest

from reflection.constants import USER_SLOTS_PREFIX
from reflection.errors import UserBusyError
from reflection.fairness import defer_seconds, user_slot


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
            assert (first.value.waiting, second.value.waiting) == (1, 2)
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


def test_deferral_grows_with_the_backlog_and_is_capped() -> None:
    delays = [defer_seconds(w, 4) for w in (1, 4, 8, 40, 4000)]
    assert delays == sorted(delays) and delays[0] >= 2.0 and delays[-1] == 30.0
