"""The error tree: its docstring draws every class with its code, and which errors the
task retries is a table (`reflection.retries`)."""

from __future__ import annotations

import errno
import inspect
import re

import pytest
import redis
from sqlalchemy.exc import OperationalError

from reflection import errors
from reflection.errors import (
    BadRequestError,
    ClaimBusyError,
    InfrastructureError,
    InternalError,
    LlmOutageError,
    LlmUnavailableError,
    LlmUnreachableError,
    LockBusyError,
    LockLostError,
    ReflectionError,
    RevertConflictError,
    TimeLimitError,
    UnsafePathError,
    UserBusyError,
)
from reflection.models import Usage
from reflection.retries import MAX_RETRIES, Retry, as_reflection_error, retries_again, retry_policy

_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+(?:Error|Failed))\s+(?P<code>[a-z_]+)\b")


def _drawn() -> dict[str, tuple[str | None, str]]:
    """Each class the docstring draws: (its parent in the drawing, its code)."""
    drawn: dict[str, tuple[str | None, str]] = {}
    parents: list[tuple[int, str]] = []  # (depth, name) of the open branches
    for line in (errors.__doc__ or "").splitlines():
        m = _LINE.match(line.strip("\n")[4:])
        if m is None:
            continue
        depth = len(m["indent"]) // 4
        parents = [p for p in parents if p[0] < depth]
        drawn[m["name"]] = (parents[-1][1] if parents else None, m["code"])
        parents.append((depth, m["name"]))
    return drawn


def _actual() -> dict[str, tuple[str | None, str]]:
    """Each error class of the module: (its parent in the tree, its code)."""
    found: dict[str, tuple[str | None, str]] = {}
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, ReflectionError) and cls.__module__ == errors.__name__:
            parent = next(
                (b.__name__ for b in cls.__bases__ if issubclass(b, ReflectionError)), None
            )
            found[name] = (parent, cls.code)
    return found


def test_the_docstring_draws_the_class_tree_with_every_code() -> None:
    """Every class, its place in the tree and its code are as drawn, and no more."""
    assert _drawn() == _actual()
    assert "UserBusyError" in _drawn()


def test_every_coded_error_lives_in_the_tree() -> None:
    """No module defines a coded error outside reflection.errors."""
    import reflection.paths
    import reflection.proposals
    import reflection.protect

    for module in (reflection.paths, reflection.proposals, reflection.protect):
        own = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, ReflectionError) and cls.__module__ == module.__name__
        ]
        assert own == [], module.__name__


def test_an_error_says_what_the_llm_cost() -> None:
    """usage and attempts are constructor arguments; an error raised elsewhere has none."""
    spent = LlmUnavailableError("down", usage=Usage(tokens_in=5, tokens_out=1), attempts=4)
    assert (spent.usage, spent.attempts, str(spent)) == (
        Usage(tokens_in=5, tokens_out=1),
        4,
        "down",
    )
    plain = TimeLimitError("late")
    assert (plain.usage, plain.attempts) == (None, 0)


@pytest.mark.parametrize(
    ("error", "policy"),
    [
        (UserBusyError("4 in flight", delay=2.0), Retry.DEFER),
        (LlmOutageError("the breaker is open", delay=30.0), Retry.DEFER),
        (LlmUnreachableError("failed after 4 attempts"), Retry.FAIL),
        (InfrastructureError("postgres down"), Retry.UNTIL_CLEARED),
        (ClaimBusyError("another delivery"), Retry.UNTIL_CLEARED),
        (redis.ConnectionError("refused"), Retry.UNTIL_CLEARED),
        (OperationalError("SELECT 1", {}, Exception("gone")), Retry.UNTIL_CLEARED),
        (OSError(errno.ENOSPC, "No space left on device"), Retry.UNTIL_CLEARED),
        (OSError(errno.EIO, "Input/output error"), Retry.UNTIL_CLEARED),
        (OSError(errno.EROFS, "Read-only file system"), Retry.UNTIL_CLEARED),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Retry.UNTIL_CLEARED),
        (TimeoutError("timed out"), Retry.UNTIL_CLEARED),
        (LockBusyError("locked"), Retry.BUDGETED),
        (LockLostError("expired"), Retry.BUDGETED),
        (PermissionError(errno.EACCES, "Permission denied"), Retry.BUDGETED),
        (OSError(errno.ELOOP, "Too many levels of symbolic links"), Retry.BUDGETED),
        (BadRequestError("positional args"), Retry.FAIL),
        (RevertConflictError("changed"), Retry.FAIL),
        (UnsafePathError("a link"), Retry.FAIL),
        (InternalError("bug"), Retry.FAIL),
        (ValueError("a bug"), Retry.FAIL),
        (KeyError("a bug"), Retry.FAIL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.name,
)
def test_retry_policy(error: BaseException, policy: Retry) -> None:
    """What clears on its own is retried as long as it lasts, what may not has a budget."""
    assert retry_policy(error) is policy


@pytest.mark.parametrize(
    ("policy", "retries", "again"),
    [
        (Retry.UNTIL_CLEARED, MAX_RETRIES + 40, True),
        (Retry.BUDGETED, MAX_RETRIES - 1, True),
        (Retry.BUDGETED, MAX_RETRIES, False),
        (Retry.FAIL, 0, False),
        (Retry.DEFER, 0, False),
    ],
)
def test_retries_again(policy: Retry, retries: int, again: bool) -> None:
    """Only a budgeted error runs out of retries; a deferral is no retry."""
    assert retries_again(policy, retries) is again


def test_a_foreign_outage_is_recorded_as_infrastructure() -> None:
    """A Redis or file error that ends a run is recorded with the code `infrastructure`."""
    assert as_reflection_error(redis.ConnectionError("down")).code == "infrastructure"
    busy = LockBusyError("locked")
    assert as_reflection_error(busy) is busy
