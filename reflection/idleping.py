"""Ping a pooled Postgres connection on checkout only if it sat idle for a while.

SQLAlchemy's `pool_pre_ping` pings on every checkout: one round trip per statement of a
run that checks out a connection per statement (six per reflection). A connection in a
busy worker was in use moments ago; the ones that go stale are those left idle across
a server restart, a failover or an idle timeout, and those are still pinged here. A
connection that breaks while busy fails its statement, SQLAlchemy invalidates the whole
pool, and the run is retried like any other database outage.

This is the pool's documented checkout hook: raising `DisconnectionError` makes the pool
discard the connection and check out a fresh one.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

_IDLE_SINCE = "reflection_idle_since"


def ping_idle_connections(engine: Engine, *, after_seconds: float) -> None:
    """Ping a connection on checkout when it was checked in more than `after_seconds` ago
    (a connection fresh from connect is not pinged)."""

    @event.listens_for(engine.pool, "checkin")
    def _idle_from_now(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < after_seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as e:  # any driver error means the connection is unusable
            raise DisconnectionError(f"stale pooled connection: {e}") from e
        if not alive:
            raise DisconnectionError("stale pooled connection")
