"""`reflection consolidate USER`: publish a consolidation pass, run one in this process
(`--now`), or ask and judge one writing nothing (`--dry-run`)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from reflection import storage
from reflection.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    Services,
    emit_json,
    fail,
    handled,
    out,
    services,
    unified_diff,
)
from reflection.cli.runs import _print_run, producer, report_summary
from reflection.cli.snapshots import UserArg
from reflection.consolidate import (
    claim_key,
    dry_run_consolidation,
    parse_pass,
    run_consolidation,
)
from reflection.errors import InfrastructureError, PermanentError, RetryableError
from reflection.models import Verdict
from reflection.producer import publish_consolidate
from reflection.records import ConsolidationMeta


@handled
def consolidate(
    user: UserArg,
    now: Annotated[
        bool, typer.Option("--now", help="Run the pass in this process (no broker).")
    ] = False,
    dry_run_: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Run in this process: ask the LLM and judge, write nothing."
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Consolidate a user's memory: merge paraphrases, retire stale entries, sharpen
    descriptions (update and remove only; SPEC §11).

    Without options, publishes the `consolidate` task (reason `operator`) for a worker.
    --now runs the pass here, as a worker would; --dry-run shows what it would do (the
    decisions with their codes and the diffs) and writes nothing anywhere."""
    try:
        parse_pass({"user_id": user, "reason": "operator"})
    except PermanentError as e:
        fail(str(e), 2)
    if user == "*":
        fail("give one user id; the sweep over every user is beat's", 2)
    with services() as svc:
        if dry_run_:
            summary, verdicts = _dry(svc, user)
        elif now:
            summary, verdicts = _now(svc, user)
        else:
            _publish(svc, user, json_)
            return
    if json_:
        emit_json(summary)
    else:
        _print_run(summary, verdicts)
    if summary["outcome"] == "failed":
        raise typer.Exit(EXIT_FAILED)


def _publish(svc: Services, user: str, json_: bool) -> None:
    app = producer(svc.settings.broker_url)
    try:
        task_id = publish_consolidate(app, user_id=user, reason="operator")
    finally:
        app.close()
    if json_:
        emit_json({"user_id": user, "published": True, "task_id": task_id})
    else:
        out.print(f"published consolidate for user {user} (task {task_id})", markup=False)


def _dry(svc: Services, user: str) -> tuple[dict[str, Any], tuple[Verdict, ...]]:
    dry = dry_run_consolidation(svc.deps(), user_id=user, now=datetime.now(UTC))
    meta = dry.journal.meta
    assert isinstance(meta, ConsolidationMeta)  # a pass's plan
    summary = {
        "dry_run": True,
        "outcome": meta.outcome.value,
        "user_id": user,
        "model": dry.result.model,
        "tokens_in": dry.result.usage.tokens_in,
        "tokens_out": dry.result.usage.tokens_out,
        "reasoning": meta.reasoning,
        "decisions": [v.model_dump(mode="json") for v in meta.verdicts],
        "diffs": [
            {"path": f.path, "diff": unified_diff(f.path, f.before, f.after)}
            for f in dry.journal.files
        ],
    }
    return summary, tuple(meta.verdicts)


def _now(svc: Services, user: str) -> tuple[dict[str, Any], tuple[Verdict, ...]]:
    pass_id = f"cli-{uuid.uuid4()}"
    try:
        report = run_consolidation(svc.deps(), user_id=user, reason="operator", pass_id=pass_id)
    except RetryableError:
        # Nobody retries a CLI pass: end the claim's lease now (its decision kept).
        with contextlib.suppress(InfrastructureError):
            storage.release_lease(
                engine=svc.engine,
                original_job_id=claim_key(user, pass_id),
                reflection_job_id=pass_id,
            )
        raise
    summary, _ = report_summary(
        report, svc.user(user), original_job_id=report.original_job_id, user_id=user
    )
    return summary, report.verdicts
