"""`reflection health`: exit 0 while the broker, lock Redis and Postgres answer, 1 as
soon as one does not (a container health check, a Kubernetes probe)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cli.conftest import Cli
from tests.conftest import _unavailable
from tests.support.db import prepare_database
from tests.support.pg import PrivatePostgres, private_postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres() -> Iterator[PrivatePostgres]:
    """A private, migrated Postgres this test may stop (never the shared one)."""
    try:
        with private_postgres() as pg:
            prepare_database(pg.url).dispose()
            yield pg
    except Exception as e:
        _unavailable("a private PostgreSQL server", e)


def test_health_is_green_with_every_service_up(cli: Cli, broker: object) -> None:
    """Broker, lock Redis and Postgres up: exit 0, one `ok` line each."""
    result = cli("health")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ok broker", "ok lock redis", "ok postgres"]


def test_health_fails_when_postgres_is_stopped(
    cli: Cli, broker: object, own_postgres: PrivatePostgres
) -> None:
    """The worker's Postgres stops: the health check turns red (exit 1), names it, and
    turns green again once it is back."""
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", own_postgres.url)
    assert cli("health").exit_code == 0
    own_postgres.stop()
    result = cli("health", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["postgres"]["ok"] and checks["broker"]["ok"] and checks["lock redis"]["ok"]
    assert "Traceback" not in result.output
    own_postgres.start()
    assert cli("health").exit_code == 0


def test_health_fails_when_the_lock_redis_is_unreachable(cli: Cli, broker: object) -> None:
    """A lock Redis the worker cannot reach (a closed port) is red, exit 1."""
    cli.monkeypatch.setenv("REFLECTION_REDIS_URL", "redis://127.0.0.1:1/0")
    result = cli("health")
    assert result.exit_code == 1
    assert "FAIL lock redis" in result.stdout


def test_health_with_a_bad_setting_exits_1_not_2(cli: Cli) -> None:
    """Container runtimes treat exit codes other than 0 and 1 as reserved: a refused
    setting is unhealthy (1), with the line that names it."""
    cli.monkeypatch.setenv("REFLECTION_PIECE_EDIT_MODE", "bogus")
    result = cli("health")
    assert result.exit_code == 1
    assert "REFLECTION_PIECE_EDIT_MODE='bogus'" in result.stderr
