"""The worker's Celery app plus baseline tasks on the same broker and settings:
`bench.noop` (the floor of Celery itself), `bench.sleep` (a task that only waits L) and
`bench.sleep_burn` (waits L, then spends a given CPU time: a reflection's shape without
its work)."""

from __future__ import annotations

import os
import threading
import time

import redis

from tasks import app

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


__all__ = ["app", "noop", "sleep", "sleep_burn"]
