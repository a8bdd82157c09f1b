"""A pooled connection killed while idle is replaced; a busy pool pings nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from reflection import clients
from reflection.clients import make_engine
from tests.conftest import TEST_DB_URL


@pytest.fixture
def engine(pg_engine: Engine) -> Iterator[Engine]:
    eng = make_engine(TEST_DB_URL)
    yield eng
    eng.dispose()


def _pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    pings: list[Any] = []
    real = engine.dialect.do_ping

    def spy(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", spy)
    return pings


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(admin: Engine, pid: int) -> None:
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()


def test_a_busy_pool_sends_no_ping(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    pings = _pings(engine, monkeypatch)
    pids = {_backend_pid(engine) for _ in range(20)}
    assert pings == []
    assert len(pids) == 1  # one pooled connection served every checkout


def test_a_connection_killed_while_idle_is_replaced(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients, "PING_AFTER_IDLE_SECONDS", 0.0)
    eng = make_engine(TEST_DB_URL)  # built with the setting above: every checkout pings
    try:
        pings = _pings(eng, monkeypatch)
        old = _backend_pid(eng)
        _terminate(pg_engine, old)
        new = _backend_pid(eng)  # the ping found it dead; the pool connected afresh
        assert new != old
        # One ping, of the dead connection: a connection fresh from connect (the first
        # checkout's, and its replacement's) is not pinged.
        assert len(pings) == 1
    finally:
        eng.dispose()


def test_a_connection_killed_while_busy_fails_once_then_the_pool_recovers(
    engine: Engine, pg_engine: Engine
) -> None:
    old = _backend_pid(engine)
    _terminate(pg_engine, old)
    with pytest.raises(OperationalError):  # checked in a moment ago: not pinged
        _backend_pid(engine)
    assert _backend_pid(engine) != old  # the disconnect invalidated the pool
