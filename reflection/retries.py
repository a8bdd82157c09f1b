"""What the task does with an error that escaped a run: a pure table beside the error tree.

    error                                     policy         the task
    UserBusyError, LlmOutageError             DEFER          re-sent later, no retry counted
    InfrastructureError, ClaimBusyError,      UNTIL_CLEARED  retried as long as it lasts
      a Redis or SQLAlchemy error, an OSError
      of a connection, a time-out or a disk
      outage (EIO, ENOSPC, EROFS, ...)
    any other RetryableError or OSError       BUDGETED       retried MAX_RETRIES times
    anything else, and a Postgres data or     FAIL           failed at once (a metrics row)
      integrity error (SQLSTATE 22, 23)

An outage ends when the service is back; another delivery's claim when that delivery
finishes (this one then ends `duplicate`) or its lease lapses: dropping the run would lose
it. A busy or lost lock, or a file error that is a mistake to fix (a permission, a link
where a file should be), may not clear, so it gets a retry budget.
"""

from __future__ import annotations

import errno
from enum import Enum

import redis
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from reflection.errors import (
    ClaimBusyError,
    DataRejectedError,
    InfrastructureError,
    LlmOutageError,
    ReflectionError,
    RetryableError,
    UserBusyError,
)

MAX_RETRIES = 12
# SQLSTATE classes of errors in the data itself (22 data exception, 23 integrity
# constraint violation): the same statement fails the same way every time.
DATA_SQLSTATE_CLASSES = frozenset({"22", "23"})
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


def is_data_error(error: BaseException) -> bool:
    """Whether `error` is Postgres (or the driver) refusing the data: SQLSTATE class 22 or
    23, or the driver's own DataError (a NUL in text is refused before it is sent)."""
    if isinstance(error, (DataError, IntegrityError)):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in DATA_SQLSTATE_CLASSES
    return False


def retry_policy(error: BaseException) -> Retry:
    """How `error` is retried (see the table above)."""
    if is_data_error(error):
        return Retry.FAIL
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
    if is_data_error(error):
        return DataRejectedError(f"database refused the data: {type(error).__name__}: {error}")
    return InfrastructureError(str(error))
