"""`reflection eval --stream`: the stream simulation's table, plot and targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from reflection.cli.common import EXIT_FAILED, EXIT_UNAVAILABLE, emit_json, err, fail, out, plain
from reflection.evals.stream import report
from reflection.evals.stream.runner import StreamError
from reflection.evals.stream.session import StreamConfig, run_stream
from reflection.settings import get_settings

StreamWhich = Literal["off", "on", "both"]


def print_stream(data: dict[str, Any]) -> None:
    """The per-user table, what each run's rules refused, and the targets."""
    cfg = data["config"]
    table = Table(
        title=plain(
            f"stream: {cfg['jobs']} jobs, {cfg['users']} users, {cfg['days']} days, "
            f"seed {cfg['seed']}"
        )
    )
    for col in report.COLUMNS:
        table.add_column(col.replace("@cp", f"@{cfg['checkpoint']}"))
    for row in report.table_rows(data):
        table.add_row(*map(plain, row))
    out.print(table)
    for mode, run in data["runs"].items():
        refused = ", ".join(f"{k} {v}" for k, v in run["refused"].items()) or "nothing"
        passes = sum(run["consolidations"].values())
        out.print(
            plain(
                f"rules {mode} ({run['rules']}): refused {refused}; {passes} consolidation passes"
            )
        )
    for t in data.get("targets", []):
        out.print(plain(f"{'met   ' if t['passed'] else 'MISSED'} {t['name']}: {t['detail']}"))


def stream_eval(
    *,
    jobs: int | None,
    users: int,
    days: int,
    seed: int,
    which: StreamWhich,
    plot: Path | None,
    out_path: Path | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Run the stream, print or emit its report, write the plot; exit 1 when a target is
    missed."""
    config = StreamConfig(jobs=jobs or 300, users=users, days=days, seed=seed)
    try:
        data = run_stream(
            config,
            get_settings(),
            which=which,
            database_url=database_url,
            progress=lambda line: err.print(plain(line)),
        )
    except StreamError as e:
        fail(str(e), EXIT_UNAVAILABLE)
    if plot is not None:
        report.write_svg(data, plot)
    if out_path is not None:
        report.write_json(data, out_path)
    if as_json:
        emit_json(data)
    else:
        print_stream(data)
        if plot is not None:
            out.print(plain(f"plot: {plot}"))
    if any(not t["passed"] for t in data.get("targets", [])):
        fail("a target of the stream was missed", EXIT_FAILED)
