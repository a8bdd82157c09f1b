"""Shared fixtures: the real Postgres and Redis (skip locally when absent, fail in CI),
a scripted LLM on loopback, factories for jobs and user folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from tests.support import db as testdb
from tests.support.broker import empty_broker

# Tests run with coalescing off unless they test it (SPEC §14): the Settings they build
# read the environment. Worker environments set it explicitly too (tests/e2e/conftest.py).
os.environ["REFLECTION_COALESCE_WINDOW_SECONDS"] = "0"

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_DB_URL = os.environ.get(
    "REFLECTION_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/reflection_test"
)
TEST_REDIS_URL = os.environ.get("REFLECTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_BROKER_URL = os.environ.get("REFLECTION_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")
# RabbitMQ, for the tests that run the worker on the other broker Celery supports well,
# in a virtual host of their own (scripts/test.sh creates it).
TEST_AMQP_URL = os.environ.get(
    "REFLECTION_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/reflection_test"
)


def _unavailable(what: str, err: Exception) -> None:
    msg = f"{what} is not reachable ({err}); start it (see README, Troubleshooting)"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def _clean_settings_cache() -> Iterator[None]:
    """Settings are cached per process; every test starts from the environment."""
    from reflection.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_engine_session() -> Iterator[Engine]:
    try:
        engine = testdb.prepare_database(TEST_DB_URL)
    except Exception as e:
        _unavailable("PostgreSQL", e)
        raise
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_engine_session: Engine) -> Engine:
    """The test database, migrated, with every table emptied."""
    with pg_engine_session.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE jobs, reflection_metrics, piece_edits, reflection_claims,"
                " piece_proposals, memory_entries RESTART IDENTITY"
            )
        )
    return pg_engine_session


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The lock Redis (a test database number), flushed."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        _unavailable("Redis", e)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def amqp_broker() -> str:
    """The RabbitMQ broker URL, with the reflection queue emptied."""
    try:
        empty_broker(TEST_AMQP_URL)
    except Exception as e:
        _unavailable("RabbitMQ", e)
    return TEST_AMQP_URL


@pytest.fixture
def user_root(tmp_path: Path) -> Path:
    root = tmp_path / "users"
    root.mkdir()
    return root


@pytest.fixture
def make_job(pg_engine: Engine) -> Any:
    """Insert a platform job row: make_job(id, user_id=..., piece_name=..., ...)."""

    def make(job_id: str, **kw: Any) -> dict[str, Any]:
        return testdb.insert_job(pg_engine, job_id, **kw)

    return make
