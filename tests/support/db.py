"""Create a migrated database with the platform's `jobs` table, and seed jobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, make_url, text

from reflection import migrations
from reflection.clients import make_engine
from reflection.storage import jobs, platform_metadata

ROOT = Path(__file__).resolve().parents[2]


def ensure_database(url: str) -> None:
    """Create the Postgres database named in `url` if it does not exist."""
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        return
    admin = make_engine(u.set(database="postgres").render_as_string(hide_password=False))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        admin.dispose()


@contextmanager
def scratch_database(url: str, suffix: str) -> Iterator[str]:
    """An empty database beside the one `url` names (its name plus `suffix`), dropped
    again afterwards; its URL."""
    u = make_url(url)
    name = f"{u.database}{suffix}"
    admin = make_engine(u.set(database="postgres").render_as_string(hide_password=False))
    drop = text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(drop)
        fresh = u.set(database=name).render_as_string(hide_password=False)
        ensure_database(fresh)
        yield fresh
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(drop)
    finally:
        admin.dispose()


def migrate(url: str) -> None:
    """The shipped migrations to head against `url` (what `reflection migrate` runs)."""
    migrations.upgrade(url)


def create_jobs_table(engine: Engine) -> None:
    """The platform's DDL (sql/jobs.sql) on Postgres; the same table via metadata elsewhere."""
    if engine.dialect.name == "postgresql":
        ddl = (ROOT / "sql" / "jobs.sql").read_text()
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
    else:
        platform_metadata.create_all(engine)


def prepare_database(url: str) -> Engine:
    """Create, migrate and add `jobs`: ready for a worker."""
    ensure_database(url)
    migrate(url)
    engine = make_engine(url)
    create_jobs_table(engine)
    return engine


# The request of every job `insert_job` makes unless given another task. Quoted as a
# change's evidence (SPEC §11), it is found in the job data shown and trusted (the request
# speaks for the user), so it supports an entry of any type.
DEFAULT_TASK = "Add a CSV export to the reports page"
EVIDENCE = [DEFAULT_TASK]


def insert_job(
    engine: Engine,
    job_id: str,
    *,
    user_id: str = "alice",
    piece_name: str = "default",
    status: str = "succeeded",
    task: str = DEFAULT_TASK,
    result: str | None = "Done: export added with tests",
    error: str | None = None,
) -> dict[str, Any]:
    row = {
        "id": job_id,
        "user_id": user_id,
        "piece_name": piece_name,
        "status": status,
        "task": task,
        "result": result,
        "error": error,
    }
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(**row))
    return row
