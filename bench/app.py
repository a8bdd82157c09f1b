"""The worker's Celery app plus baseline tasks on the same broker and settings:
`bench.noop` (the floor of Celery itself), `bench.sleep` (a task that only waits L),
`bench.sleep_burn` (waits L, then spends a given CPU time: a reflection's shape without
its work), `bench.floor` (the I/O every reflection must do, and nothing else) and
`bench.io_floor` (the I/O a reflection does within the budgets of SPEC §12, and nothing
else: the ceiling any reflection with that I/O can reach against the floor)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import redis
from sqlalchemy import insert

from bench.io_floor import io_floor_run
from reflection.fsio import atomic_write
from reflection.lock import user_lock
from reflection.storage import jobs
from tasks import app
from tasks.resources import get_deps

COUNTER = "bench:done"
_local = threading.local()


def _redis() -> redis.Redis:
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None or getattr(_local, "pid", None) != os.getpid():
        client = redis.Redis.from_url(os.environ["REFLECTION_REDIS_URL"])
        _local.client, _local.pid = client, os.getpid()
    return client


@app.task(name="bench.noop")
def noop() -> None:
    _redis().incr(COUNTER)


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)
    _redis().incr(COUNTER)


@app.task(name="bench.sleep_burn")
def sleep_burn(seconds: float, cpu_ms: float) -> None:
    time.sleep(seconds)
    end = time.thread_time() + cpu_ms / 1000
    while time.thread_time() < end:  # holds the GIL, as a run's Python work does
        pass
    _redis().incr(COUNTER)


@app.task(name="bench.floor")
def floor(user_id: str) -> None:
    """The least a reflection can do with this stack: one LLM decision through the openai
    SDK (validated), one Postgres transaction writing a row, the user's Redis lock taken
    and released, and one file written durably under it."""
    deps = get_deps()
    s = deps.settings
    deps.llm.decide(system="Reflect.", user="The job succeeded.", user_id=user_id)
    with deps.engine.begin() as conn:
        conn.execute(
            insert(jobs).values(
                id=f"floor-{uuid.uuid4().hex}",
                user_id=user_id,
                piece_name="default",
                status="succeeded",
                task="-",
            )
        )
    with user_lock(deps.redis, user_id, expire=s.lock_expire_seconds, wait=s.lock_wait_seconds):
        atomic_write(s.user_folder_root / user_id / "floor.md", "a learned fact\n")
    _redis().incr(COUNTER)


@app.task(name="bench.io_floor")
def io_floor(job_id: str, user_id: str, without: tuple[str, ...] = ()) -> None:
    """A run's I/O at the budgets, and nothing else (`bench.io_floor.io_floor_run`)."""
    io_floor_run(get_deps(), job_id, user_id, tuple(without))


__all__ = ["app", "floor", "io_floor", "noop", "sleep", "sleep_burn"]
