"""What the task does with an error that escaped a run: a pure table beside the error tree.

    error                                     policy         the task
    UserBusyError, LlmOutageError             DEFER          re-sent later, no retry counted
    InfrastructureError, ClaimBusyError,      UNTIL_CLEARED  retried as long as it lasts
      a Redis or SQLAlchemy error, an OSError
      of a connection, a time-out or a disk
      outage (EIO, ENOSPC, EROFS, ...)
    any other RetryableError or OSError       BUDGETED       retried MAX_RETRIES times
    anything else                             FAIL           failed at once (a metrics row)

An outage ends when the service is back; another delivery's claim when that delivery
finishes (this one then ends `duplicate`) or its lease lapses: dropping the run would lose
it. A busy or lost lock, or a file error that is a mistake to fix (a permission, a link
where a file should be), may not clear, so it gets a retry budget.
"""

from __future__ import annotations

import errno
from enum import Enum

import redis
from sqlalchemy.exc import SQLAlchemyError

from reflection.errors import (
    ClaimBusyError,
    InfrastructureError,
    LlmOutageError,
    ReflectionError,
    RetryableError,
    UserBusyError,
)

MAX_RETRIES = 12
_UNTIL_CLEARED = (InfrastructureError, ClaimBusyError, redis.RedisError, SQLAlchemyError)
# A file error is an outage only with these: a full, failing or read-only disk, a stale
# network mount, no memory or descriptors left.
DISK_OUTAGES = frozenset(
    {
        errno.EIO,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.ESTALE,
        errno.ENOMEM,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EMFILE,
        errno.ENFILE,
    }
)


class Retry(Enum):
    """What the task does with an error that escaped a run."""

    DEFER = "defer"
    UNTIL_CLEARED = "until_cleared"
    BUDGETED = "budgeted"
    FAIL = "fail"


def retry_policy(error: BaseException) -> Retry:
    """How `error` is retried (see the table above)."""
    if isinstance(error, (UserBusyError, LlmOutageError)):
        return Retry.DEFER
    if isinstance(error, OSError):
        outage = isinstance(error, (ConnectionError, TimeoutError)) or error.errno in DISK_OUTAGES
        return Retry.UNTIL_CLEARED if outage else Retry.BUDGETED
    if isinstance(error, _UNTIL_CLEARED):
        return Retry.UNTIL_CLEARED
    if isinstance(error, RetryableError):
        return Retry.BUDGETED
    return Retry.FAIL


def retries_again(policy: Retry, retries: int) -> bool:
    """Whether a run that failed `retries` times already is retried once more."""
    return policy is Retry.UNTIL_CLEARED or (policy is Retry.BUDGETED and retries < MAX_RETRIES)


def as_reflection_error(error: BaseException) -> ReflectionError:
    """`error` as the tree's error recorded when the run ends: an outage of a service
    (Redis, Postgres, the disk) is `infrastructure`."""
    if isinstance(error, ReflectionError):
        return error
    return InfrastructureError(str(error))
