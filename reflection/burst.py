"""The jobs of a user and piece waiting to be coalesced, in Redis (SPEC §12, §14).

A job arriving registers under its user and piece: a sorted set of job ids scored by
when each first arrived, beside a hash of job id -> its reflect task (reflection job id
and the job's outcome), so that a leader can take a follower's job and name its task in
its metrics row. A leader removes what it took; an entry left behind (a job taken or
reflected meanwhile) is removed when a leader fails to claim it. Keys expire after a
while without arrivals, so a user who went quiet leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from reflection.constants import BURST_PREFIX
from reflection.errors import InfrastructureError

_KEEP_EXTRA_SECONDS = 3600  # past the longest wait: keys of a quiet user then expire


@dataclass(frozen=True)
class Arrival:
    """A job registered for coalescing: when it first arrived (epoch seconds) and the
    reflect task that carries it."""

    job_id: str
    at: float
    reflection_job_id: str
    outcome: str


def _keys(user_id: str, piece_name: str) -> tuple[str, str]:
    base = f"{BURST_PREFIX}{user_id}:{piece_name}"
    return base, base + ":tasks"


def register(
    client: redis.Redis,
    *,
    user_id: str,
    piece_name: str,
    arrival: Arrival,
    max_wait: float,
) -> list[Arrival]:
    """Register `arrival` (a job already registered keeps its first arrival time) and
    return every job of the user and piece waiting, oldest first. One round trip."""
    zset, tasks = _keys(user_id, piece_name)
    ttl = int(max_wait) + _KEEP_EXTRA_SECONDS
    task = json.dumps({"r": arrival.reflection_job_id, "o": arrival.outcome})
    try:
        pipe = client.pipeline(transaction=True)
        pipe.zadd(zset, {arrival.job_id: arrival.at}, nx=True)
        pipe.hset(tasks, arrival.job_id, task)
        pipe.expire(zset, ttl)
        pipe.expire(tasks, ttl)
        pipe.zrange(zset, 0, -1, withscores=True)
        pipe.hgetall(tasks)
        *_, members, task_map = pipe.execute()
    except redis.RedisError as e:
        raise InfrastructureError(f"lock Redis unavailable: {e}") from e
    return _arrivals(members, task_map)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _arrivals(
    members: Sequence[tuple[bytes | str, float]], task_map: dict[bytes | str, bytes | str]
) -> list[Arrival]:
    tasks = {_text(k): _text(v) for k, v in task_map.items()}
    found = []
    for member, score in members:
        job_id = _text(member)
        try:
            task = json.loads(tasks[job_id])
            found.append(Arrival(job_id, float(score), str(task["r"]), str(task["o"])))
        except (KeyError, ValueError, TypeError):
            continue  # its task is unknown: no leader can name it; its own run registers it again
    return found


def remove(client: redis.Redis, *, user_id: str, piece_name: str, job_ids: Sequence[str]) -> None:
    """Remove jobs a leader took (or could not take) from the waiting set."""
    if not job_ids:
        return
    zset, tasks = _keys(user_id, piece_name)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.zrem(zset, *job_ids)
        pipe.hdel(tasks, *job_ids)
        pipe.execute()
    except redis.RedisError as e:
        raise InfrastructureError(f"lock Redis unavailable: {e}") from e
