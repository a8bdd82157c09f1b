"""Count what a run costs outside Python: fsyncs, Postgres and Redis round trips.

Used by the overhead test (tests/integration/test_overhead.py, which asserts the budget
of SPEC §12 / issue 24) and `bench.cpu_profile` (which prints the counts per run).

- fsyncs: every `os.fsync` and every `syncfs` (`reflection.fsio.syncfs`), one each;
- Postgres round trips: each statement the engine sends, plus a BEGIN and a COMMIT (or
  ROLLBACK) around each transaction that is not in autocommit (psycopg sends them as
  statements of their own); a pooled connection's idle ping (after 5 s idle) is not
  counted, and a run's connections are never that idle here;
- Redis round trips: each packet sent on a connection of the client's pool (a command,
  or a whole pipeline; a script's first call that finds it unloaded costs one more).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from sqlalchemy import Engine, event

from reflection import fsio

FSYNCS = "fsyncs"
POSTGRES = "postgres round trips"
REDIS = "redis round trips"


@contextmanager
def counting(engine: Engine, client: redis.Redis) -> Iterator[Counter[str]]:
    """Count the fsyncs and round trips made inside the block (the process's whole: run
    nothing else meanwhile). Details: `postgres statements`, `postgres transactions`."""
    counts: Counter[str] = Counter()

    def statement(*_: Any) -> None:
        counts.update([POSTGRES, "postgres statements"])

    def begin(conn: Any) -> None:  # an autocommit connection sends no BEGIN or COMMIT
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            counts.update({POSTGRES: 2, "postgres transactions": 1})

    hooks: list[tuple[Any, str, Callable[..., None]]] = [
        (engine, "before_cursor_execute", statement),
        (engine, "begin", begin),
    ]
    for target, name, fn in hooks:
        event.listen(target, name, fn)
    real_fsync, real_syncfs = os.fsync, fsio.syncfs
    connection_class = client.connection_pool.connection_class
    real_send = connection_class.send_packed_command

    def fsync(fd: Any) -> None:
        counts[FSYNCS] += 1
        real_fsync(fd)

    def syncfs(fd: int) -> None:
        counts.update([FSYNCS, "syncfs"])
        real_syncfs(fd)

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        counts[REDIS] += 1
        real_send(self, command, check_health)

    os.fsync = fsync
    fsio.syncfs = syncfs
    connection_class.send_packed_command = send
    try:
        yield counts
    finally:
        os.fsync = real_fsync
        fsio.syncfs = real_syncfs
        connection_class.send_packed_command = real_send
        for target, name, fn in hooks:
            event.remove(target, name, fn)
