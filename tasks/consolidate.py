"""The `consolidate` task: a thin adapter from Celery to `reflection.consolidate`.

kwargs `user_id` (a user, or `*`: beat's sweep, which publishes one pass per user
reflected since their last) and `reason` (scheduled | threshold | operator). On the
`reflect` task's queue, retried and deferred by the same policy
(`reflection.retries`); a pass that ended `failed` raises `ReflectionFailed` after its
metrics row (state FAILURE), as a reflection does.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from reflection import metrics
from reflection.consolidate import (
    TASK_NAME,
    parse_pass,
    pass_pending,
    record_pass_failure,
    run_consolidation,
    sweep,
)
from reflection.consolidation import SWEEP_USER
from reflection.constants import QUEUE_NAME
from reflection.errors import (
    BadRequestError,
    InfrastructureError,
    InternalError,
    LlmOutageError,
    ReflectionError,
    ReflectionFailed,
    TimeLimitError,
    UserBusyError,
)
from reflection.models import Outcome
from reflection.pipeline import RunReport
from reflection.producer import publish_consolidate
from reflection.retries import MAX_RETRIES, as_reflection_error, retries_again, retry_policy
from reflection.retries import Retry as Policy
from tasks.app import app
from tasks.reflect import _countdown, _defer, _retry, failure_of
from tasks.resources import get_deps

log = logging.getLogger(__name__)


def publish_pass(user_id: str, reason: str) -> str:
    """Publish one `consolidate` pass by name; returns its task id."""
    return publish_consolidate(app, user_id=user_id, reason=reason)


@app.task(name=TASK_NAME, bind=True, queue=QUEUE_NAME, max_retries=None, throws=(ReflectionFailed,))
def consolidate(self: Any, *args: Any, **kwargs: Any) -> str:
    """Consolidate one user's memory (or, with `user_id="*"`, publish the sweep's
    passes); returns the outcome string (`swept` for the sweep), or raises
    `ReflectionFailed` (state FAILURE) when the pass ended `failed`."""
    deps = get_deps()
    if not args and kwargs.get("user_id") == SWEEP_USER:
        users = sweep(deps, publish_pass)
        return f"swept {len(users)}"
    report = _run(self, deps, args, kwargs)
    if report.outcome is Outcome.FAILED:
        raise failure_of(report)
    return report.outcome.value


def _run(task: Any, deps: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunReport:
    try:
        if args:
            raise BadRequestError("consolidate takes keyword arguments only")
        request = parse_pass(kwargs)
        return run_consolidation(
            deps, user_id=request.user_id, reason=request.reason, pass_id=str(task.request.id)
        )
    except SoftTimeLimitExceeded:
        limit = TimeLimitError("the task hit its soft time limit")
        user = kwargs.get("user_id")
        if (
            task.request.retries < MAX_RETRIES
            and isinstance(user, str)
            and pass_pending(deps, pass_id=str(task.request.id), user_id=user)
        ):
            raise _retry(task, limit, 1.0) from None
        return _fail(task, deps, kwargs, limit)
    except Exception as e:
        return _after_error(task, deps, kwargs, e)


def _after_error(task: Any, deps: Any, kwargs: dict[str, Any], e: Exception) -> RunReport:
    """Defer, retry or fail the pass as `reflection.retries` says (call in the except)."""
    policy = retry_policy(e)
    if policy is Policy.DEFER:
        assert isinstance(e, (UserBusyError, LlmOutageError))
        metrics.record_deferral(e.code)
        raise _defer(task, e, e.delay) from None
    if policy is Policy.FAIL:
        if isinstance(e, BadRequestError):
            return _fail(task, deps, kwargs, e)
        log.exception("consolidate %s hit a bug", task.request.id)
        return _fail(task, deps, kwargs, InternalError(f"{type(e).__name__}: {e}"))
    error = as_reflection_error(e)
    retries = task.request.retries
    if not retries_again(policy, retries):
        return _fail(task, deps, kwargs, error)
    metrics.record_retry(error.code)
    log.warning(
        "consolidate %s retrying (%s, retry %d): %s",
        task.request.id,
        error.code,
        retries + 1,
        e,
        extra={"reflection_job_id": task.request.id, "error_code": error.code},
    )
    raise _retry(task, e, _countdown(retries)) from e


def _fail(task: Any, deps: Any, kwargs: dict[str, Any], error: ReflectionError) -> RunReport:
    """Record the failure; while Postgres cannot take the row, keep the task (retry)."""
    try:
        return record_pass_failure(
            deps, pass_id=str(task.request.id), user_id=kwargs.get("user_id"), error=error
        )
    except InfrastructureError as e:
        log.warning("consolidate %s cannot record its failure yet: %s", task.request.id, e)
        raise _retry(task, e, _countdown(MAX_RETRIES)) from e
