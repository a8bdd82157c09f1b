"""Named points of a run where the fault tests crash or pause a worker.

In production this is a no-op: `fault_point` checks its name and calls the hook, and
there is no hook. The tests install one (`tests/support/faults.py`, through the test-only
Celery app `tests.support.fault_app`), so `REFLECTION_FAULT` can SIGKILL only a worker
the tests started, never a deployed one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, get_args

Point = Literal[
    "before_llm",
    "after_llm",
    "after_journal",
    "between_writes",
    "after_files",
    "after_snapshot",
    "after_commit",
]
POINTS: Final[frozenset[str]] = frozenset(get_args(Point))

_hook: Callable[[str], None] | None = None


class UnknownFaultPointError(ValueError):
    """Raised when a fault point's name is not one of `POINTS` (a typo would otherwise
    leave a fault test passing without ever reaching its point)."""


def fault_point(name: Point) -> None:
    """Let an installed hook crash or pause the run here; nothing without one."""
    if name not in POINTS:
        raise UnknownFaultPointError(f"unknown fault point {name!r}")
    if _hook is not None:
        _hook(name)


def install(hook: Callable[[str], None] | None) -> None:
    """Call `hook(point)` at every fault point of this process (None: none again)."""
    global _hook
    _hook = hook
