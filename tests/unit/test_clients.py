"""One factory builds every client, with the timeouts of its caller: `doctor` gives up
fast, the CLI's `run` has the worker's statement timeout."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy

from reflection import clients
from reflection.clients import CLI, DOCTOR, WORKER, Timeouts, make_engine, make_openai, make_redis
from reflection.settings import Settings

PG = "postgresql+psycopg://u:p@127.0.0.1:1/db"


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every engine built (none is connected)."""
    built: list[dict[str, Any]] = []
    real = sqlalchemy.create_engine

    def capture(url: str, **kw: Any) -> Any:
        built.append({"url": url, **kw})
        return real(url, **kw)

    monkeypatch.setattr(clients, "create_engine", capture)
    return built


@pytest.mark.parametrize(
    ("timeouts", "connect", "statement"),
    [(WORKER, None, 30_000), (CLI, 5, 30_000), (DOCTOR, 5, 5_000)],
    ids=["worker", "cli", "doctor"],
)
def test_engine_timeouts(
    engines: list[dict[str, Any]], timeouts: Timeouts, connect: int | None, statement: int
) -> None:
    """Postgres: a statement timeout for every caller, a short connect timeout but for the
    worker's (as before: the driver's own)."""
    make_engine(PG, timeouts).dispose()
    [kw] = engines
    args = kw["connect_args"]
    assert args["options"] == f"-c statement_timeout={statement}"
    assert args.get("connect_timeout") == connect
    assert (kw["pool_size"], kw["max_overflow"]) == (5, 5)


def test_the_cli_runs_with_the_workers_statement_timeout() -> None:
    """The CLI's `run` drives the pipeline: it waits on a statement as long as a worker."""
    assert CLI.db_statement_ms == WORKER.db_statement_ms
    assert DOCTOR.db_connect is not None and DOCTOR.db_connect <= 5


def test_sqlite_gets_a_busy_timeout(engines: list[dict[str, Any]]) -> None:
    """SQLite (the demo) waits on a locked database as long as a statement may take."""
    make_engine("sqlite://", DOCTOR).dispose()
    assert engines[0]["connect_args"] == {"timeout": 5.0}


@pytest.mark.parametrize(
    ("timeouts", "connect", "socket", "health"),
    [(WORKER, 5, 10, 30), (CLI, 3, 10, 0), (DOCTOR, 3, 3, 0)],
    ids=["worker", "cli", "doctor"],
)
def test_redis_timeouts(timeouts: Timeouts, connect: float, socket: float, health: int) -> None:
    """Each caller's Redis client connects and waits as its profile says."""
    client = make_redis("redis://127.0.0.1:1/0", timeouts)
    try:
        kw = client.connection_pool.connection_kwargs
        assert (kw["socket_connect_timeout"], kw["socket_timeout"]) == (connect, socket)
        assert kw["health_check_interval"] == health
    finally:
        client.close()


def test_doctors_llm_client_gives_up_within_ten_seconds() -> None:
    """doctor's look at the endpoint waits at most 10 s, less if the setting says so."""
    for setting, expected in ((60.0, 10.0), (4.0, 4.0)):
        client = make_openai(Settings(llm_timeout_seconds=setting), DOCTOR)
        try:
            assert client.timeout == expected and client.max_retries == 0
        finally:
            client.close()
