"""`reflection stats`: what the reflections did, from Postgres `reflection_metrics` (and the
snapshots' decisions for the rejection codes)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import ColumnElement, Engine, func, select

from reflection.cli.common import JsonOpt, emit_json, handled, out, parse_since, plain, services
from reflection.errors import UnsafePathError
from reflection.paths import UserPaths
from reflection.records import RevertMeta
from reflection.snapshot import read_meta
from reflection.storage import reflection_metrics

_M = reflection_metrics.c
RAN_LLM = ("applied", "abstained", "rejected")


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    user: str | None = None
    piece: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        cond: list[ColumnElement[bool]] = []
        if self.since is not None:
            cond.append(_M.created_at >= self.since)
        if self.user is not None:
            cond.append(_M.user_id == self.user)
        if self.piece is not None:
            cond.append(_M.piece_name == self.piece)
        return cond


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _counts(engine: Engine, f: Filters, column: Any, *extra: ColumnElement[bool]) -> dict[str, int]:
    q = select(column, func.count()).where(*f.where(), *extra).group_by(column)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return {str(k): int(n) for k, n in sorted(rows, key=lambda r: -r[1])}


def _by_model(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    q = (
        select(
            _M.model,
            func.count(),
            func.coalesce(func.sum(_M.tokens_in), 0),
            func.coalesce(func.sum(_M.tokens_out), 0),
            func.coalesce(func.avg(_M.duration_ms), 0),
        )
        .where(*f.where(), _M.outcome.in_(RAN_LLM))
        .group_by(_M.model)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        {
            "model": m,
            "runs": int(n),
            "tokens_in": int(ti),
            "tokens_out": int(to),
            "avg_duration_ms": round(float(d)),
        }
        for m, n, ti, to, d in rows
    ]


def _durations(engine: Engine, f: Filters) -> dict[str, int | None]:
    q = select(_M.duration_ms).where(*f.where(), _M.outcome.in_((*RAN_LLM, "failed")))
    with engine.connect() as conn:
        values = sorted(int(v) for v in conn.execute(q).scalars())
    return {f"p{p}": percentile(values, p) for p in (50, 95, 99)}


def _tokens(engine: Engine, f: Filters) -> dict[str, Any]:
    q = select(
        func.count(),
        func.coalesce(func.sum(_M.tokens_in), 0),
        func.coalesce(func.sum(_M.tokens_out), 0),
    ).where(*f.where(), _M.outcome.in_(RAN_LLM))
    with engine.connect() as conn:
        n, t_in, t_out = conn.execute(q).one()
    runs = int(n)
    return {
        "runs": runs,
        "in": int(t_in),
        "out": int(t_out),
        "in_per_run": round(int(t_in) / runs) if runs else 0,
        "out_per_run": round(int(t_out) / runs) if runs else 0,
    }


def _rejection_codes(engine: Engine, f: Filters, root: Path) -> dict[str, int]:
    """Rejection codes counted from the decisions in each run's snapshot meta.json."""
    q = select(_M.user_id, _M.snapshot_id).where(
        *f.where(), _M.rejections > 0, _M.snapshot_id.is_not(None)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    codes: Counter[str] = Counter()
    for user_id, snapshot_id in rows:
        try:
            meta = read_meta(UserPaths(root, user_id), snapshot_id)
        except (OSError, ValueError, UnsafePathError):
            continue  # removed or edited by hand into something else: its codes are unknown
        if not isinstance(meta, RevertMeta):
            codes.update(v.code.value for v in meta.verdicts if not v.accepted)
    return dict(codes.most_common(10))


def stats_report(engine: Engine, root: Path, f: Filters) -> dict[str, Any]:
    """Every figure `reflection stats` shows."""
    return {
        "filters": {"since": f.since, "user": f.user, "piece": f.piece},
        "runs_by_outcome": _counts(engine, f, _M.outcome),
        "failures_by_error_code": _counts(engine, f, _M.error_code, _M.outcome == "failed"),
        "top_rejection_codes": _rejection_codes(engine, f, root),
        "tokens": _tokens(engine, f),
        "duration_ms": _durations(engine, f),
        "by_model": _by_model(engine, f),
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
            [("in", t["in"], t["in_per_run"]), ("out", t["out"], t["out_per_run"])],
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
