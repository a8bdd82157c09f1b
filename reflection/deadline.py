"""A run's deadline, in every pool (SPEC §14, issue 22).

Celery's soft time limit interrupts a run only in the prefork pool; the threads pool has
no way to stop a thread. So each run carries its own deadline: the soft time limit
(`Settings.soft_time_limit`, 30 s before REFLECTION_TASK_TIME_LIMIT) from when it
started. It bounds the LLM stage's requests and waits (`reflection.llm`), and it is
checked between the stages and before each write: a run past it stops with
`time_limit`, its slot and lock released, instead of going on (or being replayed)
forever. A thread blocked in the kernel cannot be stopped by any check, which is why
every open in a user folder is non-blocking (`reflection.fsio`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from reflection.errors import TimeLimitError


def now() -> float:
    """The clock deadlines are kept on (`time.monotonic`; the tests replace it)."""
    return time.monotonic()


@dataclass(frozen=True)
class Deadline:
    """The `now()` instant by which a run must be done; `seconds` its budget."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float, *, start: float | None = None) -> Deadline:
        """The deadline `seconds` after `start` (default: now)."""
        return cls(at=(now() if start is None else start) + seconds, seconds=seconds)

    def passed(self) -> bool:
        return now() >= self.at

    def check(self, before: str) -> None:
        """`TimeLimitError` if the deadline has passed; `before` names what would come next
        (a stage, a write), for the message."""
        if self.passed():
            raise TimeLimitError(
                f"the run passed its deadline ({self.seconds:g} s, the soft time limit) "
                f"before {before}"
            )
