"""Fairness between users: at most N reflections of one user in flight at once.

Reflections are mostly LLM wait, and the queue is first in, first out: a burst of one
user's jobs would otherwise fill every worker slot and make every other user wait behind
it. A run first takes one of its user's slots (a Redis sorted set of run ids, scored by
start time); with none free it raises `UserBusyError` and the task is deferred, taking no
worker slot while it waits. A slot whose run died is freed once it is older than the
lease, so a crash costs that user one slot for a while, never a deadlock.

A deferred run is booked a time to come back, as in a queue: the first when the user's
oldest run should end, each next one a run's length divided by the cap later, so a
burst of the user's runs drains at the rate its slots allow instead of coming back in
waves that are mostly deferred again. A run's length is a moving average of how long
the user's runs held their slots (before the user's first, of anyone's; before any, a
second: a guess too short costs a second deferral, one too long leaves slots idle).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic

import redis

from reflection.constants import RUN_SECONDS_KEY, USER_DEFERRED_PREFIX, USER_SLOTS_PREFIX
from reflection.errors import InfrastructureError, UserBusyError

FIRST_GUESS_SECONDS = 1.0  # a run's length before any run has ended
SLACK = 0.05  # runs come back this much after their slot should free: a run's length varies
MIN_DELAY_SECONDS = 0.5  # so that slots held past their time never make deferrals spin
MAX_DELAY_SECONDS = 600.0  # a deferred run waits in a worker's memory (a Celery countdown)
SMOOTHING = 0.2  # the weight of the latest run in the moving average
RUN_SECONDS_TTL = 3600  # a key per user who ran in the last hour; after that, the fleet's

# KEYS: slots, deferred, the user's run length, everyone's[, a key to peek at]. ARGV:
# now, stale_before, cap, run id, lease, first guess, shortest delay, longest delay,
# slack. With a slot taken, returns whether the peeked key exists (0 or 1; false without
# one), else the delay (a string). Re-entrant: a retry or redelivery of the same run
# keeps its slot.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local cap = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < cap then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  if KEYS[5] then return redis.call('EXISTS', KEYS[5]) end
  return false
end
local now = tonumber(ARGV[1])
local length = (tonumber(redis.call('GET', KEYS[3])) or tonumber(redis.call('GET', KEYS[4]))
  or tonumber(ARGV[6])) * (1 + tonumber(ARGV[9]))
local booked = tonumber(redis.call('HGET', KEYS[2], 'until'))
if booked and booked > now then
  booked = booked + length / cap
else
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  booked = math.max(now + tonumber(ARGV[7]), tonumber(oldest) + length)
end
local delay = math.min(booked - now, tonumber(ARGV[8]))
redis.call('HSET', KEYS[2], 'until', tostring(now + delay))
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('EXPIRE', KEYS[2], math.ceil(delay) + 60)
return tostring(delay)
"""

# KEYS: slots, the user's run length, everyone's. ARGV: now, run id, smoothing, ttl.
_RELEASE = """
local started = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not started then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
local took = tonumber(ARGV[1]) - tonumber(started)
for i = 2, 3 do
  local average = tonumber(redis.call('GET', KEYS[i]))
  if average then average = average + tonumber(ARGV[3]) * (took - average) else average = took end
  redis.call('SET', KEYS[i], tostring(average), 'EX', ARGV[4])
end
return 1
"""


@dataclass(frozen=True)
class Slot:
    """A slot held; `peeked`: whether the key asked for existed when it was taken (None:
    none was asked, or no slot was needed), `at` when (time.monotonic())."""

    peeked: bool | None = None
    at: float = 0.0


@contextmanager
def user_slot(
    client: redis.Redis,
    user_id: str,
    run_id: str,
    *,
    cap: int,
    lease_seconds: int,
    max_delay: float = MAX_DELAY_SECONDS,
    peek: str | None = None,
) -> Iterator[Slot]:
    """Hold one of `user_id`'s `cap` slots for the block (`cap` 0: no limit); raises
    `UserBusyError` when all are taken, with the delay booked for the run to come back
    (at most `max_delay` seconds). With `peek`, the same round trip tells whether that
    key exists (the LLM circuit breaker's, which the run would otherwise ask for alone)."""
    if cap <= 0:
        yield Slot()
        return
    slots = USER_SLOTS_PREFIX + user_id
    lengths = [RUN_SECONDS_KEY + ":" + user_id, RUN_SECONDS_KEY]
    now = time.time()
    try:
        asked = monotonic()  # for the peek's age (the pipeline's clock)
        delay = client.register_script(_ACQUIRE)(
            keys=[slots, USER_DEFERRED_PREFIX + user_id, *lengths, *([peek] if peek else [])],
            args=[
                now,
                now - lease_seconds,
                cap,
                run_id,
                lease_seconds,
                FIRST_GUESS_SECONDS,
                MIN_DELAY_SECONDS,
                max_delay,
                SLACK,
            ],
        )
    except redis.RedisError as e:
        raise InfrastructureError(f"lock Redis unavailable: {e}") from e
    if isinstance(delay, (bytes, str)):
        raise UserBusyError(
            f"user {user_id} has {cap} reflections in flight; deferred", delay=float(delay)
        )
    try:
        yield Slot(peeked=None if delay is None else bool(delay), at=asked)
    finally:
        with contextlib.suppress(redis.RedisError):  # else the slot ages out after the lease
            client.register_script(_RELEASE)(
                keys=[slots, *lengths], args=[time.time(), run_id, SMOOTHING, RUN_SECONDS_TTL]
            )
