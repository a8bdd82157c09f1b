"""The per-user lock on the real Redis: exclusion, busy, lost."""

from __future__ import annotations

import time

import pytest
import redis

from reflection.constants import USER_LOCK_PREFIX
from reflection.errors import LockBusyError, LockLostError
from reflection.lock import user_lock

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


def test_lock_is_renewed_past_its_expiry(redis_client: redis.Redis) -> None:
    """Auto-renewal keeps a held lock alive beyond its expiry."""
    with user_lock(redis_client, "alice", expire=2, wait=0) as lock:
        time.sleep(2.5)
        lock.ensure_owned()
