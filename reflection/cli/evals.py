"""`reflection eval`: measure reflection quality on the scenario suite, and compare runs."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from reflection.cli.common import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    JsonOpt,
    emit_json,
    err,
    fail,
    handled,
    labelled,
    out,
    plain,
    safe_url,
)
from reflection.cli.evals_stream import StreamWhich, stream_eval
from reflection.errors import LlmAuthError
from reflection.evals.report import (
    ReportError,
    build_report,
    compare,
    read_report,
    write_report,
)
from reflection.evals.runner import RunResult, run_suite
from reflection.evals.scenario import SuiteError, load_suite
from reflection.llm import LlmClient
from reflection.settings import Settings, get_settings
from reflection.shipped import EVAL_SCENARIOS_DIR

UNREACHABLE = ("llm_unavailable",)


def _settings(endpoint: str | None, model: str | None) -> Settings:
    base = get_settings()
    update: dict[str, Any] = {}
    if endpoint is not None:
        update["llm_endpoint"] = endpoint
    if model is not None:
        update["llm_model"] = model
    if not update:
        return base
    return Settings.model_validate({**base.model_dump(), **update})


def _default_out(model: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("evals/reports") / f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '-', model)}.json"


def _writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot write the report to {path} ({e.strerror}); choose a place with --out", 2)
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"cannot write the report to {path} (permission denied); choose a place with --out", 2)


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.0f}%"


def print_scorecard(report: dict[str, Any]) -> None:
    """The report's pass rates, each scenario's runs, every failed check, the summary."""
    cats = Table(title="pass rate by category")
    for col in ("category", "passed", "rate"):
        cats.add_column(col)
    for cat, c in report["categories"].items():
        cats.add_row(plain(cat), f"{c['passed']}/{c['runs']}", _pct(c["pass_rate"]))
    out.print(cats)
    out.print(_scenario_table(report))
    _print_failures(report)
    s = report["summary"]
    out.print()
    out.print(
        labelled(
            str(report.get("model")),
            f"{s['passed']}/{s['runs']} runs passed "
            f"({_pct(s['pass_rate'])}); tokens in {s['tokens_in']}, out {s['tokens_out']}; "
            f"latency p50 {s['latency_ms_p50']} ms, p95 {s['latency_ms_p95']} ms",
        )
    )


def _scenario_table(report: dict[str, Any]) -> Table:
    rows = Table(title="scenarios")
    for col in ("scenario", "category", "pass", "tokens in/out", "latency ms", "failed checks"):
        rows.add_column(col)
    for s in report["scenarios"]:
        failed = sorted({f["check"] for r in s["runs"] for f in r["failed_checks"]})
        passed = sum(r["passed"] for r in s["runs"])
        rows.add_row(
            plain(s["id"]),
            plain(s["category"]),
            f"{passed}/{len(s['runs'])}",
            f"{s['tokens_in']}/{s['tokens_out']}",
            str(s["latency_ms"]),
            plain(", ".join(failed)),
        )
    return rows


def _print_failures(report: dict[str, Any]) -> None:
    failures = [
        (s["id"], r["repeat"], f)
        for s in report["scenarios"]
        for r in s["runs"]
        for f in r["failed_checks"]
    ]
    if failures:
        out.rule("failed decisions")
        for sid, repeat, f in failures:
            out.print(
                Text.assemble(
                    (str(sid), "bold"), f" #{repeat + 1} {f['check']}: ", plain(f["detail"])
                )
            )


def print_comparison(diff: dict[str, Any]) -> None:
    table = Table(title=plain(f"A: {diff['a']['model']}  →  B: {diff['b']['model']}"))
    for col in ("category", "A", "B", "change"):
        table.add_column(col)

    def change(a: float | None, b: float | None) -> str:
        if a is None or b is None:
            return "—"
        points = round((b - a) * 100)
        return f"{points:+d} pts" if points else "="

    for cat, (a, b) in [("overall", diff["overall"]), *diff["categories"].items()]:
        table.add_row(plain(cat), _pct(a), _pct(b), change(a, b))
    out.print(table)
    for label in ("regressed", "improved", "only_in_a", "only_in_b"):
        if diff[label]:
            out.print(labelled(label.replace("_", " "), ", ".join(diff[label])))
    cost = Table(title="cost")
    for col in ("", "A", "B"):
        cost.add_column(col)
    for k, (a, b) in diff["cost"].items():
        cost.add_row(plain(k), plain(a), plain(b))
    cost.add_row("runs", *map(str, diff["runs"]))
    out.print(cost)


def _compare(files: tuple[Path, Path], as_json: bool) -> None:
    try:
        a, b = (read_report(p) for p in files)
    except ReportError as e:
        fail(str(e), EXIT_USAGE)
    try:
        diff = compare(a, b)
    except (KeyError, TypeError, ValueError) as e:
        fail(f"a report is malformed ({type(e).__name__}: {e})", EXIT_USAGE)
    if as_json:
        emit_json(diff)
    else:
        print_comparison(diff)


def _run(
    settings: Settings, suite: Path, only: str | None, repeat: int, jobs: int
) -> list[RunResult]:
    try:
        scenarios = load_suite(suite, only)
    except SuiteError as e:
        fail(str(e), EXIT_USAGE)
    with LlmClient(settings) as llm, Progress(transient=True, console=err) as bar:
        task = bar.add_task("evaluating", total=len(scenarios) * repeat)
        try:
            return run_suite(
                scenarios,
                settings,
                llm,
                repeat=repeat,
                jobs=jobs,
                progress=lambda r: bar.advance(task),
            )
        except LlmAuthError as e:
            fail(f"the LLM endpoint refused the key: {e}", EXIT_UNAVAILABLE)


def _runs_at_once(jobs: int | None) -> int:
    if jobs is not None and jobs > 64:
        fail("--jobs: at most 64 runs at once", EXIT_USAGE)
    return 4 if jobs is None else jobs


@handled
def eval_(
    endpoint: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible base URL (default REFLECTION_LLM_ENDPOINT)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (default REFLECTION_LLM_MODEL).")
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="Only scenarios whose id or category matches this glob.")
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, max=100, help="Runs per scenario.")] = 1,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Runs at once (1-64, default 4); with --stream, jobs in the stream (300).",
        ),
    ] = None,
    suite: Annotated[
        Path, typer.Option(help="Folder of scenario files (default: the shipped suite).")
    ] = EVAL_SCENARIOS_DIR,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Report file (default evals/reports/<time>-<model>.json)."),
    ] = None,
    fail_under: Annotated[
        float | None, typer.Option(min=0, max=1, help="Exit 1 when the pass rate is below this.")
    ] = None,
    compare_files: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--compare", help="Compare two reports (A.json B.json) instead of running."),
    ] = None,
    as_json: JsonOpt = False,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Simulate a stream of jobs through the worker's stages instead "
            "(a simulated model; no endpoint needed).",
        ),
    ] = False,
    users: Annotated[int, typer.Option(min=1, max=50, help="--stream: users.")] = 5,
    days: Annotated[int, typer.Option(min=1, max=3650, help="--stream: simulated days.")] = 180,
    seed: Annotated[int, typer.Option(help="--stream: the world's seed.")] = 1,
    rules: Annotated[
        StreamWhich, typer.Option(help="--stream: run with the rules off, on, or both.")
    ] = "both",
    plot: Annotated[
        Path | None, typer.Option(help="--stream: write the curves as an SVG here.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="--stream: a fresh database to run on (default: a scratch SQLite file)."),
    ] = None,
) -> None:
    """Evaluate reflection quality: run the scenario suite through the real prompt
    builder, LLM client and applier (dry run), print a scorecard and write a JSON report.
    The API key is REFLECTION_LLM_API_KEY. With --stream: simulate months of jobs of
    several users through the worker's real stages, rules off and on, and report how
    memory grows (docs/evals.md)."""
    if stream:
        stream_eval(
            jobs=jobs,
            users=users,
            days=days,
            seed=seed,
            which=rules,
            plot=plot,
            out_path=out_path,
            database_url=database_url,
            as_json=as_json,
        )
        return
    if compare_files is not None:
        _compare(compare_files, as_json)
        return
    settings = _settings(endpoint, model)
    path = out_path or _default_out(settings.llm_model)
    _writable(path)  # before the (costly) runs, not after
    results = _run(settings, suite, only, repeat, _runs_at_once(jobs))
    report = build_report(
        results,
        meta={
            "model": settings.llm_model,
            "endpoint": safe_url(settings.llm_endpoint),  # no password from the URL
            "suite": str(suite),
            "only": only,
            "repeat": repeat,
        },
    )
    write_report(report, path)
    if as_json:
        emit_json(report)
    else:
        print_scorecard(report)
        out.print(f"report: {path}", markup=False)
    if results and all(r.outcome in UNREACHABLE for r in results):
        fail(f"the LLM at {safe_url(settings.llm_endpoint)} answered no run", EXIT_UNAVAILABLE)
    if fail_under is not None and report["summary"]["pass_rate"] < fail_under:
        fail(
            f"pass rate {_pct(report['summary']['pass_rate'])} is below {_pct(fail_under)}",
            EXIT_FAILED,
        )
