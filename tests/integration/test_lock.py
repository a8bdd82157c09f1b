"""The per-user lock on the real Redis: exclusion, busy, lost."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from reflection.constants import USER_LOCK_PREFIX
from reflection.errors import LockBusyError, LockLostError
from reflection.lock import user_lock
from reflection.turns import Turns

pytestmark = pytest.mark.integration


def test_second_holder_is_busy(redis_client: redis.Redis) -> None:
    """While alice is locked, another acquire gives up after its wait; bob is free."""
    with user_lock(redis_client, "alice", expire=10, wait=0):
        t = time.monotonic()
        with pytest.raises(LockBusyError), user_lock(redis_client, "alice", expire=10, wait=1):
            pass
        assert time.monotonic() - t >= 0.9
        with user_lock(redis_client, "bob", expire=10, wait=0) as bob:
            bob.ensure_owned()
    with user_lock(redis_client, "alice", expire=10, wait=0):
        pass


def test_lost_lock_is_detected_before_a_write(redis_client: redis.Redis) -> None:
    """If the lock key disappears or changes owner, ensure_owned raises LockLostError."""
    with user_lock(redis_client, "alice", expire=10, wait=0) as lock:
        lock.ensure_owned()
        redis_client.set("lock:" + USER_LOCK_PREFIX + "alice", "someone-else")
        with pytest.raises(LockLostError):
            lock.ensure_owned()


def test_each_check_renews_the_lock(redis_client: redis.Redis) -> None:
    """ensure_owned resets the expiry: a run keeps its lock for as long as it writes."""
    key = "lock:" + USER_LOCK_PREFIX + "alice"
    with user_lock(redis_client, "alice", expire=30, wait=0) as lock:
        redis_client.expire(key, 2)  # as if most of the expiry had gone by
        lock.ensure_owned()
        assert redis_client.ttl(key) == 30


def test_a_lock_left_unchecked_past_its_expiry_is_lost(redis_client: redis.Redis) -> None:
    """A holder that stalls longer than the expiry finds the lock gone at its next check."""
    key = "lock:" + USER_LOCK_PREFIX + "alice"
    with user_lock(redis_client, "alice", expire=30, wait=0) as lock:
        redis_client.pexpire(key, 20)
        time.sleep(0.1)
        with pytest.raises(LockLostError):
            lock.ensure_owned()
        with user_lock(redis_client, "alice", expire=30, wait=0):  # free for the next holder
            pass


def test_a_run_waiting_for_a_busy_user_gives_its_cpu_turn_back(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiting for another worker's user lock holds no turn: other runs go on meanwhile,
    and the waiter gets the lock once it is free. The busy first try logs nothing."""
    caplog.set_level(logging.INFO, logger="redis_lock")
    turns = Turns(1)
    inside, got = threading.Event(), threading.Event()

    def waiter() -> None:
        with turns.hold():
            inside.set()
            with user_lock(redis_client, "alice", expire=10, wait=5, turns=turns):
                got.set()

    with user_lock(redis_client, "alice", expire=10, wait=0):
        t = threading.Thread(target=waiter)
        t.start()
        assert inside.wait(5)
        deadline = time.monotonic() + 2
        while turns.free != 1:  # its turn is back while it waits
            assert time.monotonic() < deadline, "the wait kept the turn"
            time.sleep(0.005)
        with turns.hold():  # another run gets in at once
            assert not got.is_set()
    t.join(10)
    assert got.is_set()
    assert (turns.free, turns.overflows) == (1, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_before_a_write_redis_is_asked_only_once_a_third_of_the_expiry_has_gone(
    redis_client: redis.Redis,
) -> None:
    """A run that keeps going pays no round trip per write; one paused for a third of the
    lock's expiry since it last confirmed the lock asks Redis again, and stops if lost."""
    key = "lock:" + USER_LOCK_PREFIX + "alice"
    with user_lock(redis_client, "alice", expire=3, wait=0) as lock:
        redis_client.set(key, "someone-else")
        lock.before_write()  # confirmed a moment ago: no round trip, nothing noticed
        time.sleep(1.1)
        with pytest.raises(LockLostError):
            lock.before_write()
    redis_client.delete(key)
    with user_lock(redis_client, "alice", expire=3, wait=0) as lock:
        time.sleep(1.1)
        lock.before_write()  # asked Redis, still ours: renewed for the whole expiry
        assert redis_client.ttl(key) == 3
        redis_client.set(key, "someone-else")
        lock.before_write()  # and confirmed just now
    redis_client.delete(key)
