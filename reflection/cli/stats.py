"""`reflection stats`: what the reflections did, from Postgres `reflection_metrics` (and the
snapshots' decisions for the rejection codes)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import Engine

from reflection.cli.common import JsonOpt, emit_json, handled, out, parse_since, plain, services
from reflection.errors import UnsafePathError
from reflection.paths import UserPaths
from reflection.records import RevertMeta
from reflection.snapshot import read_meta
from reflection.storage import reports
from reflection.storage.reports import RunFilters as Filters


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _tokens(engine: Engine, f: Filters) -> dict[str, Any]:
    runs, t_in, t_out, t_cached = reports.token_totals(engine=engine, f=f)
    return {
        "runs": runs,
        "in": t_in,
        "out": t_out,
        "cached": t_cached,
        "in_per_run": round(t_in / runs) if runs else 0,
        "out_per_run": round(t_out / runs) if runs else 0,
        "cached_per_run": round(t_cached / runs) if runs else 0,
        "cached_share": round(t_cached / t_in, 3) if t_in else 0.0,
    }


def _rejection_codes(engine: Engine, f: Filters, root: Path) -> dict[str, int]:
    """Rejection codes counted from the verdicts in each run's snapshot meta.json."""
    codes: Counter[str] = Counter()
    for user_id, snapshot_id in reports.snapshots_with_rejections(engine=engine, f=f):
        try:
            meta = read_meta(UserPaths(root, user_id), snapshot_id)
        except (OSError, ValueError, UnsafePathError):
            continue  # removed or edited by hand into something else: its codes are unknown
        if not isinstance(meta, RevertMeta):
            codes.update(v.code.value for v in meta.verdicts if not v.accepted)
    return dict(codes.most_common(10))


def stats_report(engine: Engine, root: Path, f: Filters) -> dict[str, Any]:
    """Every figure `reflection stats` shows."""
    durations = reports.durations_ms(engine=engine, f=f)
    return {
        "filters": {"since": f.since, "user": f.user, "piece": f.piece},
        "runs_by_outcome": reports.runs_by_outcome(engine=engine, f=f),
        "failures_by_error_code": reports.failures_by_code(engine=engine, f=f),
        "top_rejection_codes": _rejection_codes(engine, f, root),
        "tokens": _tokens(engine, f),
        "duration_ms": {f"p{p}": percentile(durations, p) for p in (50, 95, 99)},
        "by_model": [asdict(m) for m in reports.usage_by_model(engine=engine, f=f)],
    }


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(plain(v) for v in row))
    return table


def _print(report: dict[str, Any]) -> None:
    total = sum(report["runs_by_outcome"].values())
    out.print(
        _table(
            f"runs by outcome ({total})",
            ("outcome", "runs"),
            list(report["runs_by_outcome"].items()),
        )
    )
    out.print(
        _table(
            "failures by error code",
            ("code", "runs"),
            list(report["failures_by_error_code"].items()),
        )
    )
    out.print(
        _table(
            "top rejection codes", ("code", "changes"), list(report["top_rejection_codes"].items())
        )
    )
    t, d = report["tokens"], report["duration_ms"]
    out.print(
        _table(
            "tokens (runs that reached the LLM)",
            ("", "total", "per run"),
            [
                ("in", t["in"], t["in_per_run"]),
                (f"of in, cached ({t['cached_share']:.0%})", t["cached"], t["cached_per_run"]),
                ("out", t["out"], t["out_per_run"]),
            ],
        )
    )
    out.print(
        _table(
            "duration (ms)",
            ("p50", "p95", "p99"),
            [tuple("-" if d[k] is None else d[k] for k in ("p50", "p95", "p99"))],
        )
    )
    out.print(
        _table(
            "by model",
            ("model", "runs", "tokens in", "tokens out", "avg ms"),
            [tuple(m.values()) for m in report["by_model"]],
        )
    )


@handled
def stats(
    since: Annotated[
        str | None, typer.Option(help="Runs since: a date, datetime or age (7d, 24h).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's runs.")] = None,
    piece: Annotated[str | None, typer.Option(help="Only this piece's runs.")] = None,
    json_: JsonOpt = False,
) -> None:
    """What the reflections did, from reflection_metrics.

    Runs by outcome, top rejection codes, failures by error code, tokens (total and per
    run), duration p50/p95/p99 and a per-model breakdown."""
    f = Filters(since=parse_since(since), user=user, piece=piece)
    with services() as svc:
        report = stats_report(svc.engine, svc.settings.user_folder_root, f)
    if json_:
        emit_json(report)
    else:
        _print(report)
