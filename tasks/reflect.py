"""The `reflect` task: a thin adapter from Celery to `reflection.pipeline`.

It validates nothing itself and decides only one thing: retry or not. Retryable errors
are retried with jittered backoff, capped well below the broker's visibility timeout:
an outage (Redis, Postgres or disk down) and another delivery's claim on the job for as
long as they last, a busy or lost user lock `MAX_RETRIES` times. Anything else ends
`failed` with a metrics row.
"""

from __future__ import annotations

import errno
import logging
import time
from typing import Any

import kombu.exceptions
import redis
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from sqlalchemy.exc import SQLAlchemyError

from reflection.backoff import compute_backoff
from reflection.constants import QUEUE_NAME, TASK_NAME
from reflection.errors import (
    BadRequestError,
    ClaimBusyError,
    InfrastructureError,
    InternalError,
    ReflectionError,
    RetryableError,
    TimeLimitError,
    UserBusyError,
)
from reflection.pipeline import journal_pending, record_failure, run_reflection
from tasks.app import app
from tasks.resources import get_deps

log = logging.getLogger(__name__)

MAX_RETRIES = 12
# These end on their own: the service comes back; the other delivery finishes (this one
# then ends `duplicate`) or its claim's lease lapses. Dropping the run would lose it.
UNTIL_CLEARED = (InfrastructureError, ClaimBusyError, redis.RedisError, SQLAlchemyError)
# A file error is an outage only with these (a full, failing or read-only disk, a stale
# network mount, no descriptors left); others (a permission, a link where a file should
# be) are a mistake to fix and get the retry budget like a busy lock.
DISK_OUTAGES = frozenset({errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ESTALE,
                          errno.ENOMEM, errno.EAGAIN, errno.EBUSY, errno.EMFILE,
                          errno.ENFILE})  # fmt: skip
REQUEUE_PAUSE_SECONDS = 10.0  # the longest a slot waits before handing back a delivery


def _countdown(retries: int) -> float:
    cap = min(120.0, app.conf.broker_transport_options["visibility_timeout"] / 4)
    return max(1.0, compute_backoff(retries + 1, base=2.0, cap=cap))


@app.task(name=TASK_NAME, bind=True, queue=QUEUE_NAME, max_retries=None)
def reflect(self: Any, *args: Any, **kwargs: Any) -> str:
    """Reflect on one finished job; returns the outcome string."""
    deps = get_deps()
    task_id = str(self.request.id)
    try:
        if args:
            raise BadRequestError("reflect takes keyword arguments only, got positional args")
        return run_reflection(deps, reflection_job_id=task_id, kwargs=kwargs).outcome.value
    except UserBusyError as e:
        raise _defer(self, e, e.delay) from None
    except (RetryableError, redis.RedisError, SQLAlchemyError, OSError) as e:
        error = e if isinstance(e, ReflectionError) else InfrastructureError(str(e))
        retries = self.request.retries
        if retries < MAX_RETRIES or _clears_on_its_own(e):
            level = logging.WARNING if retries < MAX_RETRIES else logging.ERROR
            log.log(level, "reflect %s retrying (%s, retry %d): %s", task_id, error.code,
                    retries + 1, e)  # fmt: skip
            raise _retry(self, e, _countdown(retries)) from e
        return _fail(self, deps, kwargs, error)
    except BadRequestError as e:
        return _fail(self, deps, kwargs, e)
    except SoftTimeLimitExceeded:
        limit = TimeLimitError("the task hit its soft time limit")
        if self.request.retries < MAX_RETRIES and journal_pending(deps, kwargs):
            log.warning("reflect %s hit its soft time limit while applying; retrying to "
                        "finish it", task_id)  # fmt: skip
            raise _retry(self, limit, 1.0) from None
        return _fail(self, deps, kwargs, limit)
    except Exception as e:
        log.exception("reflect %s hit a bug", task_id)
        return _fail(self, deps, kwargs, InternalError(f"{type(e).__name__}: {e}"))


def _clears_on_its_own(e: Exception) -> bool:
    if isinstance(e, OSError):
        return isinstance(e, (ConnectionError, TimeoutError)) or e.errno in DISK_OUTAGES
    return isinstance(e, UNTIL_CLEARED)


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
            task.request.id, rejected.reason, min(countdown, REQUEUE_PAUSE_SECONDS),
        )  # fmt: skip
        time.sleep(min(countdown, REQUEUE_PAUSE_SECONDS))
        return Reject(rejected.reason, requeue=True)


def _defer(task: Any, error: UserBusyError, delay: float) -> Retry | Reject:
    """Publish the task again in `delay` seconds without counting a retry (waiting for
    its user's turn is not a failure), and tell the worker it was re-sent."""
    log.info("reflect %s deferred %.1fs: %s", task.request.id, delay, error)
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
