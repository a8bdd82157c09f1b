"""The `reflect` task: a thin adapter from Celery to `reflection.pipeline`.

It validates nothing itself and decides only how to hand back what escaped a run: as
`reflection.retries.retry_policy` says, with jittered backoff capped well below the
broker's visibility timeout. Anything not retried ends `failed` with a metrics row.

A run that ended `applied`, `abstained`, `rejected`, `duplicate` or `coalesced` (its job
reflected in another run's batch) returns that string (Celery state SUCCESS). One that
ended `failed` raises `ReflectionFailed` once its row is written: the task's state is
FAILURE, so Celery's events, Flower and `celery inspect` see it. It is in the task's
`throws` (logged at INFO without a traceback: the run's own ERROR line says what
happened) and acknowledged (`task_acks_on_failure`), never retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kombu.exceptions
import redis
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from reflection import metrics
from reflection.backoff import compute_backoff
from reflection.consolidate import maybe_trigger
from reflection.constants import QUEUE_NAME, TASK_NAME
from reflection.errors import (
    BadRequestError,
    DataRejectedError,
    InfrastructureError,
    InternalError,
    LlmOutageError,
    ReflectionError,
    ReflectionFailed,
    TimeLimitError,
    UserBusyError,
)
from reflection.models import Outcome
from reflection.pipeline import RunReport, journal_pending, record_failure, run_reflection
from reflection.producer import publish_consolidate
from reflection.retries import MAX_RETRIES, as_reflection_error, retries_again, retry_policy
from reflection.retries import Retry as Policy
from reflection.secrets import mask_secrets
from tasks.app import app
from tasks.resources import get_deps

log = logging.getLogger(__name__)

REQUEUE_PAUSE_SECONDS = 10.0  # the longest a slot waits before handing back a delivery
FAILURE_DETAIL_CHARS = 200  # of a failed run's detail, in the FAILURE's message


def _countdown(retries: int) -> float:
    cap = min(120.0, app.conf.broker_transport_options["visibility_timeout"] / 4)
    return max(1.0, compute_backoff(retries + 1, base=2.0, cap=cap))


@app.task(name=TASK_NAME, bind=True, queue=QUEUE_NAME, max_retries=None, throws=(ReflectionFailed,))
def reflect(self: Any, *args: Any, **kwargs: Any) -> str:
    """Reflect on one finished job; returns the outcome string, or raises
    `ReflectionFailed` (state FAILURE) when the run ended `failed`."""
    deps = get_deps()
    report = _run(self, deps, args, kwargs)
    if report.outcome is Outcome.FAILED:
        raise failure_of(report)
    if report.outcome is Outcome.APPLIED:  # memory grew: a consolidation may be due
        maybe_trigger(deps, report.user_id, _publish_pass)
    return report.outcome.value


def _publish_pass(user_id: str, reason: str) -> str:
    return publish_consolidate(app, user_id=user_id, reason=reason)


def _run(task: Any, deps: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunReport:
    """The run's report, once it ended; retries and deferrals are raised."""
    try:
        if args:
            raise BadRequestError("reflect takes keyword arguments only, got positional args")
        return run_reflection(deps, reflection_job_id=str(task.request.id), kwargs=kwargs)
    except SoftTimeLimitExceeded:
        return _after_time_limit(task, deps, kwargs)
    except Exception as e:
        return _after_error(task, deps, kwargs, e)


def failure_of(report: RunReport) -> ReflectionFailed:
    """The FAILURE of a run that ended `failed`: its code, then its detail on one line,
    short and with any credential masked (the message reaches events and Flower)."""
    detail = " ".join(mask_secrets(report.detail).split())
    if len(detail) > FAILURE_DETAIL_CHARS:
        detail = detail[: FAILURE_DETAIL_CHARS - 1] + "…"
    return ReflectionFailed(report.error_code or InternalError.code, detail)


def _after_error(task: Any, deps: Any, kwargs: dict[str, Any], e: Exception) -> RunReport:
    """Defer, retry or fail the run as `reflection.retries` says (call in the except)."""
    policy = retry_policy(e)
    if policy is Policy.DEFER:
        assert isinstance(e, (UserBusyError, LlmOutageError))
        metrics.record_deferral(e.code)
        raise _defer(task, e, e.delay) from None
    if policy is Policy.FAIL:
        if isinstance(e, (BadRequestError, DataRejectedError)):
            return _fail(task, deps, kwargs, e)
        log.exception("reflect %s hit a bug", task.request.id)
        return _fail(task, deps, kwargs, InternalError(f"{type(e).__name__}: {e}"))
    error = as_reflection_error(e)
    retries = task.request.retries
    if not retries_again(policy, retries):
        return _fail(task, deps, kwargs, error)
    metrics.record_retry(error.code)
    level = logging.WARNING if retries < MAX_RETRIES else logging.ERROR
    fields = {"reflection_job_id": task.request.id, "error_code": error.code}
    log.log(
        level,
        "reflect %s retrying (%s, retry %d): %s",
        task.request.id,
        error.code,
        retries + 1,
        e,
        extra=fields,
    )
    raise _retry(task, e, _countdown(retries)) from e


def _after_time_limit(task: Any, deps: Any, kwargs: dict[str, Any]) -> RunReport:
    """A run stopped by the soft time limit once its journal is written is retried to
    finish it (the retry only rolls the journal forward); any other fails `time_limit`."""
    limit = TimeLimitError("the task hit its soft time limit")
    if task.request.retries < MAX_RETRIES and journal_pending(deps, kwargs):
        log.warning(
            "reflect %s hit its soft time limit while applying; retrying to finish it",
            task.request.id,
        )
        raise _retry(task, limit, 1.0) from None
    return _fail(task, deps, kwargs, limit)


def _retry(task: Any, exc: BaseException, countdown: float) -> Retry | Reject:
    """`task.retry`, but a retry Celery cannot publish is not dropped.

    Celery turns a failed publish of the retry into `Reject(requeue=False)`: the
    delivery would be acked and the run lost. Instead, wait out the countdown here
    (capped) and hand the delivery back to the broker; if the broker cannot take even
    that, the delivery stays unacked and comes back after the visibility timeout."""
    try:
        return task.retry(exc=exc, countdown=countdown, throw=False)
    except Reject as rejected:
        log.warning(
            "reflect %s: the retry could not be published (%s); requeueing in %.1fs",
            task.request.id,
            rejected.reason,
            min(countdown, REQUEUE_PAUSE_SECONDS),
        )
        time.sleep(min(countdown, REQUEUE_PAUSE_SECONDS))
        return Reject(rejected.reason, requeue=True)


def _defer(task: Any, error: UserBusyError | LlmOutageError, delay: float) -> Retry | Reject:
    """Publish the task again in `delay` seconds without counting a retry (waiting for
    its user's turn, or for the LLM endpoint to come back, is not a failure), and tell
    the worker it was re-sent."""
    fields = {"reflection_job_id": task.request.id, "error_code": error.code}
    log.info("reflect %s deferred %.1fs: %s", task.request.id, delay, error, extra=fields)
    try:
        task.signature_from_request(countdown=delay, retries=task.request.retries).apply_async()
    except (kombu.exceptions.OperationalError, redis.RedisError) as e:
        return _retry(task, e, delay)
    return Retry(str(error), error, when=delay)


def _fail(task: Any, deps: Any, kwargs: dict[str, Any], error: ReflectionError) -> RunReport:
    """Record the failure; while Postgres cannot take the row, keep the task (retry)."""
    try:
        return record_failure(
            deps, reflection_job_id=str(task.request.id), kwargs=kwargs, error=error
        )
    except InfrastructureError as e:
        log.warning("reflect %s cannot record its failure yet: %s", task.request.id, e)
        raise _retry(task, e, _countdown(MAX_RETRIES)) from e
