"""Help, exit codes and what every command prints when a service is down."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli
from tests.cli.helpers import no_traceback

pytestmark = pytest.mark.integration

COMMANDS = [
    "doctor",
    "run",
    "enqueue",
    "backfill",
    "history",
    "show",
    "revert",
    "stats",
    "proposals",
    "approve",
    "reject",
    "protect",
    "unprotect",
    "memory",
    "why",
]


def test_help_lists_every_command(cli: Cli) -> None:
    """`--help` names every command, and each command's own --help exits 0."""
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout
        sub = cli(name, "--help")
        assert sub.exit_code == 0, (name, sub.output)
        assert "Usage" in sub.stdout


def test_no_arguments_is_usage(cli: Cli) -> None:
    """A missing argument is a usage error (exit 2), not a crash."""
    assert cli("run").exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ("stats",),
        ("run", "job-x"),
        ("run", "job-x", "--dry-run"),
        ("enqueue", "job-x"),
        ("backfill",),
        ("proposals",),
        ("approve", "1"),
        ("reject", "1"),
        ("memory", "alice"),
        ("why", "alice", "prefers-pytest"),
    ],
)
def test_postgres_down_is_one_clear_line(cli: Cli, args: tuple[str, ...]) -> None:
    """With Postgres unreachable every database command prints one line and exits 3."""
    cli.monkeypatch.setenv(
        "REFLECTION_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/reflection"
    )
    result = cli(*args)
    assert result.exit_code == 3, result.output
    assert no_traceback(result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PostgreSQL is not reachable" in lines[0], result.stderr
    assert "127.0.0.1:1" in lines[0]


def test_redis_down_is_one_clear_line(cli: Cli) -> None:
    """With the lock Redis unreachable, a command that needs the lock exits 3 in one line."""
    cli.env.user().memory_dir.mkdir(parents=True)
    cli.monkeypatch.setenv("REFLECTION_REDIS_URL", "redis://127.0.0.1:1/0")
    result = cli("protect", "alice", "anything")
    assert result.exit_code == 3, result.output
    assert no_traceback(result.output)
    assert "Redis is not reachable" in result.stderr


def test_broker_down_is_one_clear_line(cli: Cli, make_job: object) -> None:
    """With the broker unreachable, enqueue exits 3 with a one-line message."""
    make_job("job-b")  # type: ignore[operator]
    cli.monkeypatch.setenv("REFLECTION_BROKER_URL", "redis://127.0.0.1:1/0")
    result = cli("enqueue", "job-b")
    assert result.exit_code == 3, result.output
    assert no_traceback(result.output) and "broker is not reachable" in result.stderr


def test_invalid_configuration_is_usage_error(cli: Cli) -> None:
    """A malformed REFLECTION_* value is reported in one line with exit 2."""
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", "mysql://nope")
    result = cli("stats")
    assert result.exit_code == 2, result.output
    assert "invalid configuration" in result.stderr and no_traceback(result.output)
