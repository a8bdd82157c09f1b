"""The per-user Redis lock around apply + snapshot (python-redis-lock, expiry + renewal).

python-redis-lock's renewal thread fails silently when Redis goes away
(python-redis-lock#85), so a holder checks it still owns the lock before each group of
writes: the journal, the files, the snapshot and rows (`ensure_owned`). Postgres'
fencing token is the final judge at commit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis_lock

from reflection.constants import USER_LOCK_PREFIX
from reflection.errors import InfrastructureError, LockBusyError, LockLostError

log = logging.getLogger(__name__)


class UserLock:
    """A held user lock; `ensure_owned()` before each group of writes."""

    def __init__(self, lock: redis_lock.Lock, user_id: str) -> None:
        self._lock = lock
        self.user_id = user_id

    def ensure_owned(self) -> None:
        """Raise `LockLostError` unless this process still holds the lock."""
        try:
            owner = self._lock.get_owner_id()
        except redis.RedisError as e:
            raise LockLostError(f"cannot confirm the lock of user {self.user_id}: {e}") from e
        if owner != self._lock.id:
            raise LockLostError(f"the lock of user {self.user_id} expired or was taken over")


@contextmanager
def user_lock(client: redis.Redis, user_id: str, *, expire: int, wait: float) -> Iterator[UserLock]:
    """Hold `user_id`'s lock for the block; `LockBusyError` if not acquired within `wait`."""
    lock = redis_lock.Lock(client, USER_LOCK_PREFIX + user_id, expire=expire, auto_renewal=True)
    try:
        # python-redis-lock waits in whole seconds (BLPOP); the client's socket timeout
        # must exceed this wait.
        timeout = max(1, math.ceil(wait)) if wait > 0 else None
        acquired = lock.acquire(blocking=wait > 0, timeout=timeout)
    except redis.RedisError as e:
        raise InfrastructureError(f"lock Redis unavailable: {e}") from e
    if not acquired:
        raise LockBusyError(f"user {user_id} is locked by another worker")
    try:
        yield UserLock(lock, user_id)
    finally:
        try:
            lock.release()
        except redis_lock.NotAcquired:
            log.warning("lock of user %s had expired before release", user_id)
        except redis.RedisError as e:
            # The key expires on its own; nothing deadlocks when Redis comes back.
            log.warning("could not release the lock of user %s: %s", user_id, e)
