"""The `reflection` command: the typer app, its global options and its commands."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Annotated

import typer

from reflection.cli import (
    consolidate,
    doctor,
    entries,
    evals,
    health,
    memory_cmds,
    migrate,
    proposals,
    runs,
    snapshots,
    stats,
)
from reflection.cli.common import FLAGS
from reflection.logs import configure_logging
from reflection.settings import get_settings

DISTRIBUTION = "reflection-worker"  # the name in pyproject.toml

app = typer.Typer(
    name="reflection",
    help="Operate the reflection worker: check services, run, backfill, audit and undo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reflection {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed worker's version (the wheel's), or `unknown` outside any install."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


@app.callback()
def _global(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every stage (to stderr).")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Settings come from REFLECTION_* variables (or .env), as for the worker.

    Exit codes: 0 ok, 1 failed or refused, 2 bad usage or configuration, 3 a service is
    unreachable, 4 an id names nothing (job, user, snapshot, proposal, memory entry).
    With --json a failure also prints {"error": {"code", "message", "exit_code"}}."""
    FLAGS.debug = debug
    try:
        fmt = get_settings().log_format
    except Exception:  # reported by the command itself, in one line
        fmt = "text"
    configure_logging(fmt, logging.DEBUG if verbose else logging.WARNING)


app.command(rich_help_panel="Health")(doctor.doctor)
app.command(rich_help_panel="Health")(health.health)
app.command(rich_help_panel="Health")(migrate.migrate)
app.command(rich_help_panel="Runs")(runs.run)
app.command(rich_help_panel="Runs")(runs.enqueue)
app.command(rich_help_panel="Runs")(runs.backfill)
app.command(rich_help_panel="Audit and undo")(snapshots.history)
app.command(rich_help_panel="Audit and undo")(snapshots.show)
app.command(rich_help_panel="Audit and undo")(snapshots.revert)
app.command(rich_help_panel="Audit and undo")(stats.stats)
app.command(rich_help_panel="Piece review")(proposals.proposals)
app.command(rich_help_panel="Piece review")(proposals.approve)
app.command(rich_help_panel="Piece review")(proposals.reject)
app.command(rich_help_panel="Memory")(entries.memory)
app.command(rich_help_panel="Memory")(entries.why)
app.command(rich_help_panel="Memory")(memory_cmds.protect)
app.command(rich_help_panel="Memory")(memory_cmds.unprotect)
app.command(rich_help_panel="Memory")(consolidate.consolidate)
app.command(name="eval", rich_help_panel="Quality")(evals.eval_)


def main() -> None:
    """The console script's entry point."""
    app()
