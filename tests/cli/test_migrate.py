"""`reflection migrate`: the shipped migrations create the worker's tables in an empty
database and leave a migrated one as it is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import inspect

from reflection import migrations
from reflection.clients import make_engine
from tests.cli.conftest import Cli
from tests.conftest import TEST_DB_URL
from tests.support.db import scratch_database

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_db(pg_engine_session: object) -> Iterator[str]:
    """A fresh, empty database beside the test database, dropped afterwards."""
    with scratch_database(TEST_DB_URL, "_migrate") as url:
        yield url


def test_migrate_creates_the_tables_then_does_nothing(cli: Cli, empty_db: str) -> None:
    """From nothing to head with the worker's tables; a second run is a no-op."""
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", empty_db)
    first = cli("migrate")
    head = migrations.head_revision()
    assert first.exit_code == 0, first.output
    assert f"migrated from nothing to {head}" in first.stdout
    engine = make_engine(empty_db)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"reflection_metrics", "piece_edits", "reflection_claims"} <= tables
    assert cli.json("migrate") == {"database": empty_db, "from": head, "to": head}


def test_migrate_with_postgres_down_says_so(cli: Cli) -> None:
    """An unreachable database is one line and exit code 3, as for every command."""
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    result = cli("migrate")
    assert result.exit_code == 3
    assert "PostgreSQL is not reachable" in result.output and "Traceback" not in result.output
