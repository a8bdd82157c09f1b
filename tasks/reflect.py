"""The `reflect` task: a thin adapter from Celery to `reflection.pipeline`.

It validates nothing itself and decides only how to hand back what escaped a run: as
`reflection.retries.retry_policy` says, with jittered backoff capped well below the
broker's visibility timeout. Anything not retried ends `failed` with a metrics row.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kombu.exceptions
import redis
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from reflection.backoff import compute_backoff
from reflection.constants import QUEUE_NAME, TASK_NAME
from reflection.errors import (
    BadRequestError,
    InfrastructureError,
    InternalError,
    ReflectionError,
    TimeLimitError,
    UserBusyError,
)
from reflection.pipeline import journal_pending, record_failure, run_reflection
from reflection.retries import MAX_RETRIES, as_reflection_error, retries_again, retry_policy
from reflection.retries import Retry as Policy
from tasks.app import app
from tasks.resources import get_deps

log = logging.getLogger(__name__)

REQUEUE_PAUSE_SECONDS = 10.0  # the longest a slot waits before handing back a delivery


def _countdown(retries: int) -> float:
    cap = min(120.0, app.conf.broker_transport_options["visibility_timeout"] / 4)
    return max(1.0, compute_backoff(retries + 1, base=2.0, cap=cap))


@app.task(name=TASK_NAME, bind=True, queue=QUEUE_NAME, max_retries=None)
def reflect(self: Any, *args: Any, **kwargs: Any) -> str:
    """Reflect on one finished job; returns the outcome string."""
    deps = get_deps()
    try:
        if args:
            raise BadRequestError("reflect takes keyword arguments only, got positional args")
        return run_reflection(
            deps, reflection_job_id=str(self.request.id), kwargs=kwargs
        ).outcome.value
    except SoftTimeLimitExceeded:
        return _after_time_limit(self, deps, kwargs)
    except Exception as e:
        return _after_error(self, deps, kwargs, e)


def _after_error(task: Any, deps: Any, kwargs: dict[str, Any], e: Exception) -> str:
    """Defer, retry or fail the run as `reflection.retries` says (call in the except)."""
    policy = retry_policy(e)
    if policy is Policy.DEFER:
        assert isinstance(e, UserBusyError)
        raise _defer(task, e, e.delay) from None
    if policy is Policy.FAIL:
        if isinstance(e, BadRequestError):
            return _fail(task, deps, kwargs, e)
        log.exception("reflect %s hit a bug", task.request.id)
        return _fail(task, deps, kwargs, InternalError(f"{type(e).__name__}: {e}"))
    error = as_reflection_error(e)
    retries = task.request.retries
    if not retries_again(policy, retries):
        return _fail(task, deps, kwargs, error)
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


def _after_time_limit(task: Any, deps: Any, kwargs: dict[str, Any]) -> str:
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


def _defer(task: Any, error: UserBusyError, delay: float) -> Retry | Reject:
    """Publish the task again in `delay` seconds without counting a retry (waiting for
    its user's turn is not a failure), and tell the worker it was re-sent."""
    fields = {"reflection_job_id": task.request.id, "error_code": error.code}
    log.info("reflect %s deferred %.1fs: %s", task.request.id, delay, error, extra=fields)
    try:
        task.signature_from_request(countdown=delay, retries=task.request.retries).apply_async()
    except (kombu.exceptions.OperationalError, redis.RedisError) as e:
        return _retry(task, e, delay)
    return Retry(str(error), error, when=delay)


def _fail(task: Any, deps: Any, kwargs: dict[str, Any], error: ReflectionError) -> str:
    """Record the failure; while Postgres cannot take the row, keep the task (retry)."""
    try:
        report = record_failure(
            deps, reflection_job_id=str(task.request.id), kwargs=kwargs, error=error
        )
    except InfrastructureError as e:
        log.warning("reflect %s cannot record its failure yet: %s", task.request.id, e)
        raise _retry(task, e, _countdown(MAX_RETRIES)) from e
    return report.outcome.value
