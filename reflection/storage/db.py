"""What every query shares: driver errors wrapped as outages, one-statement connections,
idempotent inserts and UTC timestamps."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from reflection.errors import DataRejectedError, InfrastructureError
from reflection.retries import is_data_error


@functools.cache
def insert_ignoring(dialect_name: str, table: Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING for the dialect; executed with the row as
    parameters, so one statement serves every run (building and hashing a statement
    costs about as much as running it on loopback)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=[key])


@functools.cache
def insert_over_failed(dialect_name: str, table: Table, key: str) -> Any:
    """A run's metrics row, replacing a `failed` row of the same run: the task recorded
    a failure (a soft time limit, a bug) after the run had written its journal, and the
    journal was completed later. Any other row stays (a replay writes nothing)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[key],
        set_={c.name: stmt.excluded[c.name] for c in table.c if not c.primary_key},
        where=table.c.outcome == "failed",
    )


@functools.cache
def _insert_returning(dialect_name: str, table: Table, key: str) -> Any:
    # The driver's rowcount of an INSERT SQLAlchemy adds its own RETURNING to is -1.
    return insert_ignoring(dialect_name, table, key).returning(table.c[key])


def insert_row(conn: Connection, table: Table, key: str, row: dict[str, Any]) -> bool:
    """Insert `row` unless a row with the same `key` exists (a replay writes nothing);
    whether it was inserted."""
    stmt = _insert_returning(conn.dialect.name, table, key)
    return conn.execute(stmt, row).first() is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


class driver_errors:  # used like a function: `with driver_errors(), ...`
    """Wrap driver errors as retryable infrastructure failures, except Postgres refusing
    the data itself (SQLSTATE 22, 23): that is `DataRejectedError`, permanent."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        if isinstance(e, SQLAlchemyError):
            if is_data_error(e):
                raise DataRejectedError(
                    f"database refused the data: {type(e).__name__}: {_first_line(e)}"
                ) from e
            raise InfrastructureError(f"database error: {type(e).__name__}: {e}") from e


def _first_line(e: BaseException) -> str:
    """The driver's message without the statement and parameters SQLAlchemy appends
    (they may hold user text)."""
    orig = getattr(e, "orig", None)
    return (str(orig) if orig is not None else str(e)).splitlines()[0][:300]


@contextmanager
def single_statement(engine: Engine) -> Iterator[Connection]:
    """A connection for one statement in autocommit: it is its own transaction, without
    the BEGIN and COMMIT round trips around it (a run makes several)."""
    with driver_errors(), engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")
