"""The per-user Redis lock around apply + snapshot (python-redis-lock, with expiry).

The holder checks the lock before each group of writes (the journal, the files, the
snapshot and rows) and before every single write with `before_write`, which asks Redis
(`ensure_owned`: one atomic EXTEND that renews the lock and fails unless this holder
still owns the key) only once a third of the expiry has passed since the lock was last
confirmed: a run paused mid-way (a stall, a stop signal) past its lease stops before
its next write instead of overwriting what the lock's next holder wrote, at no cost to
a run that keeps going (a quick run asks Redis only to take and release the lock; an
operator's command confirms with `ensure_owned` before it writes). A run keeps its
lock for as long as it keeps writing, and a killed worker's lock expires on its own.
(python-redis-lock's auto-renewal starts a thread per acquisition, which a busy
threads-pool worker paid for on every run, and it fails silently when Redis goes away,
python-redis-lock#85.)
Postgres' fencing token is the final judge at commit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import redis
import redis_lock

from reflection import metrics
from reflection.constants import USER_LOCK_PREFIX
from reflection.errors import InfrastructureError, LockBusyError, LockExpiredError, LockLostError
from reflection.turns import Turns

if TYPE_CHECKING:
    from reflection.deadline import Deadline
    from reflection.settings import Settings

log = logging.getLogger(__name__)


class _BusyIsExpected(logging.Filter):
    """python-redis-lock warns whenever a non-blocking acquire finds the lock taken. Here
    that is a normal first try (a run that then gives up raises `LockBusyError`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to acquire")


logging.getLogger("redis_lock.acquire").addFilter(_BusyIsExpected())
_NO_TURNS = Turns(0)  # a caller outside the worker's turns waits holding none


class UserLock:
    """A held user lock; `ensure_owned()` (which renews it) before each group of writes,
    `before_write()` before each write."""

    def __init__(
        self,
        lock: redis_lock.Lock,
        user_id: str,
        *,
        expire: int,
        since: float,
        deadline: Deadline | None = None,
    ) -> None:
        self._lock = lock
        self.user_id = user_id
        self._fresh_for = expire / 3
        self._confirmed = since  # time.monotonic() when this holder last knew it owned it
        # The holder's run deadline, checked before each write (TimeLimitError).
        self.deadline = deadline

    def before_write(self) -> None:
        """`ensure_owned()` if the lock has not been confirmed for a third of its expiry:
        until then it is surely still held (it expires a whole expiry after the request
        that confirmed it). A run checks this before each group of writes and each
        write, so a quick run asks Redis only to take and release the lock.
        `TimeLimitError` once the holder's deadline has passed."""
        if self.deadline is not None:
            self.deadline.check("a write")
        if time.monotonic() - self._confirmed > self._fresh_for:
            self.ensure_owned()

    def ensure_owned(self) -> None:
        """Renew the lock for its full expiry; `LockExpiredError` unless this holder still
        owns it (`LockLostError` when Redis cannot say), `TimeLimitError` once the
        holder's deadline has passed."""
        if self.deadline is not None:
            self.deadline.check("a write")
        asked = time.monotonic()  # the lease runs from the request, not from the answer
        try:
            self._lock.extend()
            self._confirmed = asked
        except redis.RedisError as e:
            raise LockLostError(f"cannot confirm the lock of user {self.user_id}: {e}") from e
        except (redis_lock.NotAcquired, redis_lock.NotExpirable) as e:
            raise LockExpiredError(
                f"the lock of user {self.user_id} expired or was taken over"
            ) from e


def _key(user_id: str) -> str:
    """The lock's Redis key, as python-redis-lock names it (its release and extend)."""
    return "lock:" + USER_LOCK_PREFIX + user_id


@contextmanager
def user_lock(
    client: redis.Redis,
    user_id: str,
    *,
    expire: int,
    wait: float,
    turns: Turns = _NO_TURNS,
    deadline: Deadline | None = None,
) -> Iterator[UserLock]:
    """Hold `user_id`'s lock for the block; `LockBusyError` if not acquired within `wait`.
    A run that has to wait gives its CPU turn back meanwhile (`turns`); a run with a
    `deadline` checks it before each write."""
    lock = redis_lock.Lock(client, USER_LOCK_PREFIX + user_id, expire=expire)
    asked = first_asked = time.monotonic()
    try:
        # The first try is one SET NX: python-redis-lock's acquire asks whether this
        # object holds the lock (a GET) first, a round trip a run never needs.
        acquired = bool(client.set(_key(user_id), lock.id, nx=True, ex=expire))
        if not acquired and wait > 0:
            # python-redis-lock waits in whole seconds (BLPOP); the client's socket
            # timeout must exceed this wait.
            with turns.released():
                asked = time.monotonic()
                acquired = lock.acquire(blocking=True, timeout=max(1, math.ceil(wait)))
    except redis.RedisError as e:
        raise InfrastructureError(f"lock Redis unavailable: {e}") from e
    metrics.observe_lock_wait(time.monotonic() - first_asked)
    if not acquired:
        raise LockBusyError(f"user {user_id} is locked by another worker")
    try:
        yield UserLock(lock, user_id, expire=expire, since=asked, deadline=deadline)
    finally:
        try:
            lock.release()
        except redis_lock.NotAcquired:
            log.warning("lock of user %s had expired before release", user_id)
        except redis.RedisError as e:
            # The key expires on its own; nothing deadlocks when Redis comes back.
            log.warning("could not release the lock of user %s: %s", user_id, e)


def operator_lock(
    settings: Settings, client: redis.Redis, user_id: str
) -> AbstractContextManager[UserLock]:
    """`user_lock` with the configured expiry and wait, for an operator command."""
    return user_lock(
        client, user_id, expire=settings.lock_expire_seconds, wait=settings.lock_wait_seconds
    )
