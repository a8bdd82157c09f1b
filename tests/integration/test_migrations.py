"""The migration chain on a database holding data: 0002 → head keeps every row and gives
each metrics row its kind; head → 0002 takes the new table and column away again. On the
real Postgres, and on SQLite (the embedded demo migrates one too)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, insert, inspect, select, text

from reflection import migrations
from reflection.clients import make_engine
from reflection.storage import memory_entries
from tests.conftest import TEST_DB_URL
from tests.support.db import scratch_database

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, tzinfo=UTC)
# (reflection_job_id, outcome, the kind it gets)
ROWS = [
    ("r-applied", "applied", "reflection"),
    ("r-failed", "failed", "reflection"),
    ("r-duplicate", "duplicate", "reflection"),
    ("revert-5b1c", "reverted", "revert"),
]


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_engine_session: Engine) -> Iterator[str]:
    """An empty database of each dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reflection.sqlite'}"
        return
    with scratch_database(TEST_DB_URL, "_chain") as fresh:
        yield fresh


def _metrics_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        for rid, outcome, _ in ROWS:
            conn.execute(
                text(
                    "INSERT INTO reflection_metrics (reflection_job_id, original_job_id,"
                    " user_id, piece_name, outcome) VALUES (:rid, 'j', 'alice', 'default', :o)"
                ),
                {"rid": rid, "o": outcome},
            )


def test_upgrade_from_0002_with_data_then_downgrade(url: str) -> None:
    """Rows of 0002 stay and get their kind (a revert's from its outcome); the entry
    table takes a record with its evidence; the downgrade removes both and keeps the rows;
    upgrading again works."""
    migrations.upgrade(url, "0002")
    engine = make_engine(url)
    try:
        _metrics_rows(engine)
        migrations.upgrade(url, "0003")
        assert migrations.current_revision(engine) == "0003"
        with engine.begin() as conn:
            kinds = {
                str(rid): str(kind)
                for rid, kind in conn.execute(
                    text("SELECT reflection_job_id, kind FROM reflection_metrics")
                )
            }
            conn.execute(
                insert(memory_entries).values(
                    user_id="alice",
                    name="prefers-pytest",
                    type="feedback",
                    created_at=NOW,
                    updated_at=NOW,
                    evidence={"job_id": "r-applied", "quotes": ["use pytest"]},
                )
            )
            record = conn.execute(select(memory_entries)).mappings().one()
        assert kinds == {rid: kind for rid, _, kind in ROWS}
        assert record["evidence"] == {"job_id": "r-applied", "quotes": ["use pytest"]}
        assert (record["origin"], record["confirmations"]) == ("worker", 0)

        command.downgrade(migrations.alembic_config(url), "0002")
        schema = inspect(engine)
        assert "memory_entries" not in schema.get_table_names()
        assert "kind" not in {c["name"] for c in schema.get_columns("reflection_metrics")}
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT reflection_job_id FROM reflection_metrics")).scalars()
            assert sorted(kept) == sorted(rid for rid, _, _ in ROWS)
        migrations.upgrade(url, "0003")
        assert migrations.current_revision(engine) == "0003"
    finally:
        engine.dispose()


def test_upgrade_from_0003_adds_the_cost_columns_then_downgrade(url: str) -> None:
    """0004 gives every existing metrics row tokens_cached 0 and no coalesced_into, and the
    claims a batch column; its downgrade takes them away and keeps the rows."""
    migrations.upgrade(url, "0003")
    engine = make_engine(url)
    try:
        _metrics_rows(engine)
        migrations.upgrade(url)
        assert migrations.current_revision(engine) == "0004" == migrations.head_revision()
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT tokens_cached, coalesced_into FROM reflection_metrics")
            ).all()
        assert [tuple(r) for r in rows] == [(0, None)] * len(ROWS)
        assert "batch" in {c["name"] for c in inspect(engine).get_columns("reflection_claims")}

        command.downgrade(migrations.alembic_config(url), "0003")
        schema = inspect(engine)
        columns = {c["name"] for c in schema.get_columns("reflection_metrics")}
        assert not {"tokens_cached", "coalesced_into"} & columns
        assert "batch" not in {c["name"] for c in schema.get_columns("reflection_claims")}
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT count(*) FROM reflection_metrics")).scalar_one()
        assert kept == len(ROWS)
    finally:
        engine.dispose()
