"""Every error the pipeline and the operator commands raise, as one rooted tree.

    ReflectionError                      internal          the root
    ├── ReflectionFailed                 failed            a run ended `failed`: the task's FAILURE
    ├── RetryableError                   retryable         the task is retried later, never dropped
    │   ├── InfrastructureError          infrastructure    Redis/Postgres/filesystem down
    │   ├── LockBusyError                lock_busy         another worker holds the user lock
    │   ├── LockLostError                lock_lost         our lock expired mid-run
    │   │   └── LockExpiredError         lock_lost         ... Redis says so (counts to poison)
    │   ├── JournalPendingError          time_limit        stopped at its deadline after its journal
    │   ├── UserBusyError                user_busy         the user's runs in flight are at the cap
    │   │   └── BatchWaitError           coalescing        waiting for its burst or its batch
    │   ├── LlmOutageError               llm_outage        the LLM circuit breaker is open
    │   └── ClaimBusyError               claim_busy        another delivery of the job is running
    └── PermanentError                   failed            failed at once, a metrics row, no retry
        ├── BadRequestError              bad_request       task kwargs invalid
        ├── JobNotFoundError             job_not_found
        ├── InputMismatchError           input_mismatch
        ├── PieceNotFoundError           piece_not_found
        ├── InputError                   input_invalid     a required input is unreadable
        │   ├── UnsafePathError          input_invalid     a path component or a link is unsafe
        │   ├── NotRegularFileError      input_invalid     a FIFO, socket or device for a file
        │   │   └── FolderInPlaceError   input_invalid     a folder there (an UnsafePathError too)
        │   └── EntryNotFoundError       not_found         `protect` names no memory entry
        ├── ContextOverflowError         context_overflow
        ├── LlmAuthError                 llm_auth
        ├── LlmUnavailableError          llm_unavailable
        │   └── LlmUnreachableError      llm_unavailable   an outage: every attempt failed
        ├── LlmInvalidOutputError        llm_invalid_output
        ├── PoisonError                  poison            too many crashed deliveries
        ├── DataRejectedError            data_rejected     Postgres refused the data (22, 23)
        ├── TimeLimitError               time_limit        the soft time limit hit
        ├── RevertConflictError          revert_conflict   files changed since a snapshot
        ├── ProposalError                proposal_invalid  a proposal decided, or not decidable
        │   └── ProposalNotFoundError    not_found         no proposal has that id
        ├── ProposalRefusedError         proposal_refused  an approval failed its re-check
        └── InternalError                internal          a bug; logged with a traceback

Each class carries its error `code`, the string recorded in `reflection_metrics.error_code`,
and every error what the run's LLM calls had cost when it was raised (`usage`, `attempts`:
the LLM stage's errors say; the others have none). Which of them are retried is decided
by `reflection.retries`. `ReflectionFailed` is raised by the task alone, after the run
recorded its failure, so that Celery, its events and Flower see the task fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from reflection.models import Usage, Verdict


class ReflectionError(Exception):
    """Raised when a reflection cannot go on; the root of the tree."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str = "", *, usage: Usage | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.usage = usage  # the tokens paid for before it was raised (None: no LLM call)
        self.attempts = attempts  # the LLM requests made


class ReflectionFailed(ReflectionError):
    """Raised by the `reflect` task when its run ended `failed`, after the run's metrics
    row is written: the task ends in state FAILURE (listed in its `throws`, so Celery logs
    it without a traceback, and acknowledged, not retried). `error_code` is the run's
    code; the message starts with it, then the short detail."""

    code = "failed"

    def __init__(self, error_code: str, detail: str = "") -> None:
        super().__init__(f"{error_code}: {detail}" if detail else error_code)
        self.error_code = error_code
        self.detail = detail

    def __reduce__(self) -> tuple[type[ReflectionFailed], tuple[str, str]]:
        # A prefork child hands the exception to its parent pickled: rebuild it from
        # both arguments, not from the message.
        return (ReflectionFailed, (self.error_code, self.detail))


class RetryableError(ReflectionError):
    """Raised when the run may succeed later; the task adapter retries it."""

    code = "retryable"


class InfrastructureError(RetryableError):
    """Raised when Redis, Postgres or the filesystem fails under us."""

    code = "infrastructure"


class LockBusyError(RetryableError):
    """Raised when the user's lock is held by another worker past the wait."""

    code = "lock_busy"


class LockLostError(RetryableError):
    """Raised when our user lock expired or was taken before a write."""

    code = "lock_lost"


class LockExpiredError(LockLostError):
    """Raised when Redis says our user lock expired or another holder took it: the run
    held it past its expiry without writing (a stall, or a decision too slow to apply).
    Unlike an outage it counts toward `poison`: a decision that cannot be applied in
    time fails after REFLECTION_MAX_DELIVERIES deliveries instead of being replayed."""


class JournalPendingError(RetryableError):
    """Raised when a run passed its deadline after writing its journal: the retry only
    rolls the journal forward (reusing the stored decision), so it is finished, not
    failed."""

    code = "time_limit"


class UserBusyError(RetryableError):
    """Raised when the user already has the most reflections in flight a user may have;
    the task is deferred (not counted as a retry) so other users' tasks go first."""

    code = "user_busy"

    def __init__(self, message: str, *, delay: float = 0.0) -> None:
        super().__init__(message)
        self.delay = delay  # seconds until the run's booked time to come back


class BatchWaitError(UserBusyError):
    """Raised while a run waits for its burst to settle, or for the batch that took its
    job to commit (`reflection.coalesce`): deferred like `user_busy`, no slot held and
    no retry counted."""

    code = "coalescing"


class LlmOutageError(RetryableError):
    """Raised when the LLM circuit breaker is open (`reflection.breaker`) and this run
    may not probe the endpoint: the task is deferred (not counted as a retry) until the
    breaker closes, for up to REFLECTION_LLM_OUTAGE_RETRY_HOURS since the run first met
    the outage."""

    code = "llm_outage"

    def __init__(self, message: str, *, delay: float = 0.0) -> None:
        super().__init__(message)
        self.delay = delay  # seconds until the run asks again


class ClaimBusyError(RetryableError):
    """Raised when another delivery of the same job holds a live claim."""

    code = "claim_busy"


class PermanentError(ReflectionError):
    """Raised when retrying cannot help; the run ends `failed` with this code."""

    code = "failed"


class BadRequestError(PermanentError):
    """Raised when the task's kwargs are missing, mistyped or unsafe."""

    code = "bad_request"


class JobNotFoundError(PermanentError):
    """Raised when the original job is not in the platform's `jobs` table."""

    code = "job_not_found"


class InputMismatchError(PermanentError):
    """Raised when the job row's user or piece disagrees with the task kwargs."""

    code = "input_mismatch"


class PieceNotFoundError(PermanentError):
    """Raised when neither the user's copy nor a built-in piece exists."""

    code = "piece_not_found"


class InputError(PermanentError):
    """Raised when a required input exists but cannot be read or parsed."""

    code = "input_invalid"


class UnsafePathError(InputError, ValueError):
    """Raised when a path component is not a safe slug or a path escapes its root.

    An `InputError` (code `input_invalid`): a run that meets one ends `failed` with a
    metrics row instead of crashing."""


class NotRegularFileError(InputError, ValueError):
    """Raised when a FIFO, socket, device or folder stands where a regular file is
    expected (code `input_invalid`); the message names the path and what is there.

    Such a file is never read, appended to or deleted. A ValueError, like any other
    unreadable file: a journal is left for an operator, an index the run rewrites whole
    is replaced by the rename."""

    def __init__(self, path: Path, kind: str, refusal: str = "refusing to open it") -> None:
        super().__init__(f"{path} is a {kind}, not a regular file; {refusal}")
        self.path = path
        self.kind = kind


class FolderInPlaceError(NotRegularFileError, UnsafePathError):
    """Raised when a folder stands where a regular file is expected: no rename can
    replace it, so even a file the run rewrites whole is refused (an UnsafePathError)."""

    def __init__(self, path: Path, refusal: str = "refusing to open it") -> None:
        super().__init__(path, "folder", refusal)


class EntryNotFoundError(InputError):
    """Raised when the user has no memory entry of that name."""

    code = "not_found"


class ContextOverflowError(PermanentError):
    """Raised when the prompt cannot fit the context limit even after trimming."""

    code = "context_overflow"


class LlmAuthError(PermanentError):
    """Raised when the LLM endpoint refuses the worker's key (401/403)."""

    code = "llm_auth"


class LlmUnavailableError(PermanentError):
    """Raised when the LLM endpoint still fails after every retry."""

    code = "llm_unavailable"


class LlmUnreachableError(LlmUnavailableError):
    """Raised when timeouts, connection errors, 408, 429, 5xx or answers without a chat
    completion outlasted every attempt: an outage, which opens the circuit breaker. The
    run is deferred while the breaker is open, and fails `llm_unavailable` only once its
    outage window is over."""


class LlmInvalidOutputError(PermanentError):
    """Raised when the LLM's answer does not validate, even after one repair round-trip."""

    code = "llm_invalid_output"


class PoisonError(PermanentError):
    """Raised when one job's deliveries kept dying (more than `max_deliveries` in a row)."""

    code = "poison"


class DataRejectedError(PermanentError):
    """Raised when Postgres refuses a statement's data: SQLSTATE class 22 (a value out of
    range, a NUL in text) or 23 (an integrity constraint). Retrying the same data cannot
    help, so it is no outage (`reflection.retries`)."""

    code = "data_rejected"


class TimeLimitError(PermanentError):
    """Raised when a run overran the soft time limit (`REFLECTION_TASK_TIME_LIMIT`)."""

    code = "time_limit"


class RevertConflictError(PermanentError):
    """Raised when files changed since a snapshot, so restoring would lose those changes."""

    code = "revert_conflict"


class ProposalError(PermanentError):
    """Raised when a proposal is already decided, or cannot be decided now."""

    code = "proposal_invalid"


class ProposalNotFoundError(ProposalError):
    """Raised when no proposal has the id an operator gave."""

    code = "not_found"


class ProposalRefusedError(PermanentError):
    """Raised when an approval fails the re-check against the current piece."""

    code = "proposal_refused"

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"refused: {verdict.code.value}: {verdict.detail}".rstrip(": "))
        self.verdict = verdict


class InternalError(PermanentError):
    """Raised when the pipeline hits a bug; the run fails and is not retried."""

    code = "internal"
