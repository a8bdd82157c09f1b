"""`reflection run`, `enqueue` and `backfill`: reflect on finished jobs, in-process or via
the broker."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from celery import Celery
from rich.progress import Progress
from sqlalchemy import Engine

from reflection import constants as c
from reflection import storage
from reflection.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    Services,
    emit_json,
    fail,
    handled,
    labelled,
    not_found,
    out,
    parse_since,
    plain,
    services,
    unified_diff,
)
from reflection.cli.snapshots import print_file_diffs, print_verdicts, snapshot_diffs
from reflection.errors import BadRequestError, InfrastructureError, RetryableError
from reflection.models import Job, LlmResult, ReflectRequest, Verdict
from reflection.paths import UserPaths
from reflection.pipeline import (
    RunReport,
    apply_limits,
    load_stage,
    prompt_stage,
    run_reflection,
    stored_decision,
)
from reflection.plan import State, plan
from reflection.producer import make_producer, publish_reflect
from reflection.records import AskedMeta, Journal, ReflectionMeta, SnapshotMeta
from reflection.request import parse_request
from reflection.snapshot import PIECE_BEFORE, read_meta
from reflection.storage import reports

JobArg = Annotated[str, typer.Argument(help="The platform job id (a row of `jobs`).")]


def request_for(engine: Engine, job_id: str) -> ReflectRequest:
    """The `reflect` kwargs of a finished job, read from the `jobs` table."""
    job = storage.fetch_job(engine=engine, job_id=job_id)
    if job is None:
        not_found(f"job {job_id!r} is not in the jobs table")
    return _request(job)


def _request(job: Job) -> ReflectRequest:
    if job.status not in c.OUTCOMES:
        fail(f"job {job.id} is {job.status!r}, not finished ({'/'.join(c.OUTCOMES)})")
    return parse_request(
        {
            "original_job_id": job.id,
            "user_id": job.user_id,
            "piece_name": job.piece_name,
            "outcome": job.status,
        }
    )


@dataclass(frozen=True)
class DryRun:
    """What a run would do: the LLM's answer and the journal it would roll forward."""

    result: LlmResult
    journal: Journal


def dry_run(svc: Services, request: ReflectRequest, now: datetime) -> DryRun:
    """Load, prompt, ask the LLM and plan, writing nothing: no file, no row, no claim."""
    s = svc.settings
    paths = UserPaths(s.user_folder_root, request.user_id)
    inputs = load_stage(s, svc.engine, request, paths)
    prompt = prompt_stage(s, inputs)
    result = svc.llm.decide(system=prompt.system, user=prompt.user, user_id=request.user_id)
    state = State(
        memory={e.name: e for e in inputs.memory},
        unreadable=frozenset(Path(m.path).stem for m in inputs.malformed),
        piece=inputs.piece,
        last_piece_edit_at=storage.last_piece_edit_at(
            engine=svc.engine, user_id=request.user_id, piece_name=request.piece_name
        ),
    )
    stored = stored_decision(result, request, prompt)
    journal = plan(
        paths=paths,
        request=request,
        reflection_job_id=f"dry-run-{uuid.uuid4()}",
        fence=0,
        llm=stored.result,
        grounds=stored.grounds,
        state=state,
        limits=apply_limits(s),
        now=now,
        store_llm_raw=False,
        piece_edit_mode=s.piece_edit_mode,
    )
    return DryRun(result, journal)


def _print_run(summary: dict[str, Any], verdicts: Sequence[Verdict]) -> None:
    if summary.get("dry_run"):
        _note("dry run: the LLM was asked and its answer judged; nothing was written")
    for k in (
        "outcome",
        "error_code",
        "detail",
        "original_job_id",
        "user_id",
        "piece_name",
        "reflection_job_id",
        "snapshot_id",
        "model",
        "tokens_in",
        "tokens_out",
    ):
        if summary.get(k) not in (None, ""):
            out.print(labelled(k, summary[k]))
    if summary.get("reasoning"):
        out.rule("reasoning")
        out.print(plain(summary["reasoning"], multiline=True))
    if summary["outcome"] not in ("failed", "duplicate"):
        print_verdicts(verdicts)
    print_file_diffs(summary["diffs"])
    if summary.get("dry_run"):
        _note("dry run: nothing was written (no file, no row, no claim)")


def _note(text: str) -> None:
    """A line about the run itself, in bold, never wrapped."""
    out.print(text, style="bold", markup=False, soft_wrap=True)


def _dry_summary(
    request: ReflectRequest, dry: DryRun
) -> tuple[dict[str, Any], tuple[Verdict, ...]]:
    j, meta = dry.journal, dry.journal.meta
    assert isinstance(meta, ReflectionMeta)  # a plan's meta
    summary = {
        "dry_run": True,
        "outcome": meta.outcome.value,
        "original_job_id": request.original_job_id,
        "user_id": request.user_id,
        "piece_name": request.piece_name,
        "model": dry.result.model,
        "tokens_in": dry.result.usage.tokens_in,
        "tokens_out": dry.result.usage.tokens_out,
        "reasoning": meta.reasoning,
        "decisions": [v.model_dump(mode="json") for v in meta.verdicts],
        "piece_staged": j.proposal is not None,
        "diffs": [
            {"path": f.path, "diff": unified_diff(f.path, f.before, f.after)} for f in j.files
        ]
        + (
            [
                {
                    "path": "piece proposal (staged for review)",
                    "diff": unified_diff("piece", j.snapshot.get(PIECE_BEFORE), j.proposal.yaml),
                }
            ]
            if j.proposal is not None
            else []
        ),
    }
    return summary, tuple(meta.verdicts)


def _real_summary(
    svc: Services, request: ReflectRequest
) -> tuple[dict[str, Any], tuple[Verdict, ...]]:
    rid = f"cli-{uuid.uuid4()}"
    deps = svc.deps()
    # An operator's run is now, and of this job alone: it waits for no burst.
    deps.settings = deps.settings.model_copy(update={"coalesce_window_seconds": 0})
    try:
        report = run_reflection(deps, reflection_job_id=rid, kwargs=request.model_dump())
    except RetryableError:
        # Nobody retries a CLI run: hand the claim back now (its decision kept), so the
        # worker or a second `run` need not wait out the lease.
        with contextlib.suppress(InfrastructureError):
            storage.release_lease(
                engine=svc.engine, original_job_id=request.original_job_id, reflection_job_id=rid
            )
        raise
    paths = UserPaths(svc.settings.user_folder_root, request.user_id)
    summary, meta = report_summary(
        report,
        paths,
        original_job_id=request.original_job_id,
        user_id=request.user_id,
        piece_name=request.piece_name,
    )
    if meta is not None:
        summary["model"] = meta.model if isinstance(meta, AskedMeta) else None
    return summary, report.verdicts


def report_summary(
    report: RunReport, paths: UserPaths, **who: str
) -> tuple[dict[str, Any], SnapshotMeta | None]:
    """What `run` and `consolidate --now` print of a finished run (`who`: the ids after
    the outcome), and its snapshot's meta when it wrote one."""
    summary: dict[str, Any] = {
        "dry_run": False,
        "outcome": report.outcome.value,
        "error_code": report.error_code,
        "detail": report.detail,
        **who,
        "reflection_job_id": report.reflection_job_id,
        "tokens_in": report.tokens_in,
        "tokens_out": report.tokens_out,
        "reasoning": report.reasoning,
        "decisions": [d.model_dump(mode="json") for d in report.verdicts],
        "snapshot_id": None,
        "diffs": [],
    }
    if report.snapshot_dir is None:
        return summary, None
    meta = read_meta(paths, report.snapshot_dir.name)
    summary.update(snapshot_id=meta.snapshot_id, diffs=snapshot_diffs(paths, meta))
    return summary, meta


@handled
def run(
    job_id: JobArg,
    dry_run_: Annotated[
        bool, typer.Option("--dry-run", help="Ask the LLM and judge, but write nothing.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Reflect on one finished job in this process (no broker).

    Shows the decision: the reasoning, every change accepted or rejected with its code,
    and coloured diffs of memory and piece. --dry-run writes nothing anywhere."""
    with services() as svc:
        request = request_for(svc.engine, job_id)
        if dry_run_:
            summary, verdicts = _dry_summary(request, dry_run(svc, request, datetime.now(UTC)))
        else:
            summary, verdicts = _real_summary(svc, request)
    if json_:
        emit_json(summary)
    else:
        _print_run(summary, verdicts)
    if summary["outcome"] == "failed":
        raise typer.Exit(EXIT_FAILED)


# Publishing.


def producer(broker_url: str) -> Celery:
    """A publishing app whose broker was just reached (fails fast when it is down)."""
    app = make_producer(broker_url)
    app.conf.broker_connection_timeout = 3
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
    return app


@handled
def enqueue(job_id: JobArg, json_: JsonOpt = False) -> None:
    """Publish `reflect` for one finished job (skipped when it is already reflected)."""
    with services() as svc:
        request = request_for(svc.engine, job_id)
        state = storage.claim_state(engine=svc.engine, original_job_id=job_id)
        task_id = None
        if state != "done":
            app = producer(svc.settings.broker_url)
            task_id = publish_reflect(app, **request.model_dump())
            app.close()
    result = {"job_id": job_id, "published": task_id is not None, "task_id": task_id}
    if json_:
        emit_json(result)
    elif task_id is None:
        out.print(f"job {job_id} is already reflected; nothing published", markup=False)
    else:
        out.print(f"published reflect for job {job_id} (task {task_id})", markup=False)


def _rate(value: str) -> float:
    text = value.removesuffix("/s")
    try:
        rate = float(text)
    except ValueError:
        fail(f"--rate {value!r}: use tasks per second, e.g. 20/s or 0.5", 2)
    if rate <= 0:
        fail("--rate must be positive", 2)
    return rate


@handled
def backfill(
    since: Annotated[
        str | None, typer.Option(help="Jobs finished since: a date, datetime or age (7d, 24h).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's jobs.")] = None,
    rate: Annotated[str, typer.Option(help="Publish at most N tasks a second (N/s).")] = "10/s",
    limit: Annotated[int, typer.Option(help="At most N jobs (0 = all).")] = 0,
    dry_run_: Annotated[
        bool, typer.Option("--dry-run", help="List the jobs, publish nothing.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Publish `reflect` for every finished job without a reflection.

    Jobs already reflected are skipped; a re-publish of a pending job is a duplicate
    for the worker, so running it twice reflects nothing twice."""
    interval = 1.0 / _rate(rate)
    with services() as svc:
        jobs = reports.pending_jobs(
            engine=svc.engine, since=parse_since(since), user=user, limit=limit
        )
        published, invalid = _publish_all(svc, jobs, interval, dry_run_, quiet=json_)
    result = {
        "candidates": len(jobs),
        "published": published,
        "invalid": invalid,
        "dry_run": dry_run_,
    }
    if json_:
        emit_json(result)
        return
    if dry_run_:
        chosen = set(published)
        for job in jobs:
            if job.id in chosen:
                out.print(
                    f"would publish {job.id} (user {job.user_id}, piece {job.piece_name}, "
                    f"job {job.status})",
                    markup=False,
                    soft_wrap=True,
                )
    verb = "would publish" if dry_run_ else "published"
    out.print(f"{verb} {len(published)} of {len(jobs)} job(s) without a reflection", markup=False)
    for line in invalid:
        out.print(f"skipped {line}", markup=False)


def _publish_all(
    svc: Services, jobs: list[Job], interval: float, dry: bool, *, quiet: bool
) -> tuple[list[str], list[str]]:
    published: list[str] = []
    invalid: list[str] = []
    if not jobs:
        return published, invalid
    app = None if dry else producer(svc.settings.broker_url)
    with Progress(console=out, disable=quiet or dry, transient=False) as progress:
        bar = progress.add_task("publishing", total=len(jobs))
        for job in jobs:
            try:
                request = _request(job)
            except BadRequestError as e:
                invalid.append(f"{job.id}: {e}")
                continue
            if app is not None:
                publish_reflect(app, **request.model_dump())
                time.sleep(interval)
            published.append(job.id)
            progress.advance(bar)
    if app is not None:
        app.close()
    return published, invalid
