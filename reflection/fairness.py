"""Fairness between users: at most N reflections of one user in flight at once.

Reflections are mostly LLM wait, and the queue is first in, first out: a burst of one
user's jobs would otherwise fill every worker slot and make every other user wait behind
it. A run first takes one of its user's slots (a Redis sorted set of run ids, scored by
start time); with none free it raises `UserBusyError` and the task is deferred, taking no
worker slot while it waits. A slot whose run died is freed once it is older than the
lease, so a crash costs that user one slot for a while, never a deadlock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from reflection.constants import USER_DEFERRED_PREFIX, USER_SLOTS_PREFIX
from reflection.errors import InfrastructureError, UserBusyError

# KEYS: slots, deferred. ARGV: now, stale_before, cap, run id, ttl.
# Re-entrant: a retry or redelivery of the same run keeps its slot.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return -1
end
local waiting = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 60)
return waiting
"""


@contextmanager
def user_slot(
    client: redis.Redis, user_id: str, run_id: str, *, cap: int, lease_seconds: int
) -> Iterator[None]:
    """Hold one of `user_id`'s `cap` slots for the block (`cap` 0: no limit); raises
    `UserBusyError` when all are taken, with the user's deferral count (it grows through
    a burst and resets after a minute without deferrals) to space out the retries."""
    if cap <= 0:
        yield
        return
    slots = USER_SLOTS_PREFIX + user_id
    now = time.time()
    try:
        result = client.register_script(_ACQUIRE)(
            keys=[slots, USER_DEFERRED_PREFIX + user_id],
            args=[now, now - lease_seconds, cap, run_id, lease_seconds],
        )
    except redis.RedisError as e:
        raise InfrastructureError(f"lock Redis unavailable: {e}") from e
    if int(result) >= 0:
        raise UserBusyError(
            f"user {user_id} has {cap} reflections in flight; deferred", waiting=int(result)
        )
    try:
        yield
    finally:
        with contextlib.suppress(redis.RedisError):  # else the slot ages out after the lease
            client.zrem(slots, run_id)


def defer_seconds(waiting: int, cap: int, *, base: float = 2.0, ceiling: float = 30.0) -> float:
    """How long to defer a run whose user is at its cap: longer the more of that user's
    runs are waiting (about `waiting / cap` rounds of runs are ahead of it)."""
    return min(ceiling, base * (1 + waiting / max(cap, 1)))
