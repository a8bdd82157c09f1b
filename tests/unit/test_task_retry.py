"""How the task re-sends itself: a retry Celery cannot publish hands the delivery back
instead of dropping it, a deferral is a cheap retry that counts none, and what ends on
its own (an outage, another delivery's claim) is retried for as long as it lasts.

Celery's own `Task.retry` runs here (the broker is refused at its publish): it turns the
failure into `Reject(requeue=False)`, which would ack the delivery and lose the run.
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import kombu.exceptions
import pytest
import redis
from celery.canvas import Signature
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from reflection.errors import (
    ClaimBusyError,
    InfrastructureError,
    LockBusyError,
    LockLostError,
    ReflectionFailed,
    UserBusyError,
)
from reflection.models import Outcome
from reflection.pipeline import RunReport
from reflection.retries import MAX_RETRIES
from tasks.reflect import REQUEUE_PAUSE_SECONDS, _retry, failure_of, reflect

reflect_module = importlib.import_module("tasks.reflect")  # `tasks.reflect` is also the task

KWARGS = {
    "original_job_id": "j1",
    "user_id": "alice",
    "piece_name": "default",
    "outcome": "succeeded",
}


@pytest.fixture
def request_context() -> Iterator[None]:
    reflect.push_request(
        id="task-1", retries=2, args=[], kwargs=KWARGS, is_eager=False, called_directly=False
    )
    yield
    reflect.pop_request()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(reflect_module.time, "sleep", slept.append)
    return slept


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Signature]:
    """Every signature the task re-sends, kept instead of published."""
    sent: list[Signature] = []

    def publish(sig: Signature, *a: Any, **k: Any) -> None:
        sent.append(sig)

    monkeypatch.setattr(Signature, "apply_async", publish)
    return sent


def test_a_published_retry_is_a_retry(
    request_context: None, sleeps: list[float], published: list[Signature]
) -> None:
    out = _retry(reflect, InfrastructureError("postgres down"), 30.0)
    assert isinstance(out, Retry)
    [sig] = published
    assert sig.options["countdown"] == 30.0 and sig.options["retries"] == 3
    assert sig.kwargs == KWARGS
    assert sleeps == []


def test_a_retry_the_broker_refuses_requeues_the_delivery_after_a_pause(
    request_context: None, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise kombu.exceptions.OperationalError("broker unreachable")

    monkeypatch.setattr(Signature, "apply_async", refuse)
    with pytest.raises(Reject) as celery_alone:  # what Celery does by itself
        reflect.retry(exc=InfrastructureError("postgres down"), countdown=30.0)
    assert celery_alone.value.requeue is False
    out = _retry(reflect, InfrastructureError("postgres down"), 30.0)
    assert isinstance(out, Reject) and out.requeue is True
    assert sleeps == [REQUEUE_PAUSE_SECONDS]  # the countdown, capped
    assert _retry(reflect, InfrastructureError("postgres down"), 2.0).requeue is True
    assert sleeps[-1] == 2.0


def test_a_deferral_is_a_retry_without_a_chained_traceback(
    request_context: None, published: list[Signature], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose user is at its cap is re-sent later, not counted as a retry. The
    Retry carries the reason but not the UserBusyError's traceback: Celery formats the
    whole chain of every Retry it is handed, and a deferral is no error to debug."""

    def busy(*a: Any, **k: Any) -> None:
        raise UserBusyError("user alice has 4 reflections in flight; deferred", delay=6.5)

    monkeypatch.setattr(reflect_module, "get_deps", SimpleNamespace)
    monkeypatch.setattr(reflect_module, "run_reflection", busy)
    with pytest.raises(Retry) as deferred:
        reflect.run(**KWARGS)
    assert isinstance(deferred.value.exc, UserBusyError)
    assert "deferred" in str(deferred.value)
    assert deferred.value.__cause__ is None and deferred.value.__suppress_context__
    [sig] = published
    assert sig.options["retries"] == 2  # unchanged: waiting for a turn is no failure
    assert sig.options["countdown"] == 6.5  # the time booked for it (reflection.fairness)


@pytest.fixture
def failures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The codes of the runs the task ends `failed`, kept instead of recorded."""
    codes: list[str] = []

    def record(deps: Any, *, reflection_job_id: str, kwargs: Any, error: Any) -> Any:
        codes.append(error.code)
        return SimpleNamespace(outcome=Outcome.FAILED, error_code=error.code, detail=str(error))

    monkeypatch.setattr(reflect_module, "get_deps", SimpleNamespace)
    monkeypatch.setattr(reflect_module, "record_failure", record)
    return codes


def _run_at_retry(retries: int, error: Exception, monkeypatch: pytest.MonkeyPatch) -> Any:
    def fail(*a: Any, **k: Any) -> None:
        raise error

    monkeypatch.setattr(reflect_module, "run_reflection", fail)
    reflect.push_request(
        id="task-1", retries=retries, args=[], kwargs=KWARGS, is_eager=False, called_directly=False
    )
    try:
        return reflect.run(**KWARGS)
    finally:
        reflect.pop_request()


@pytest.mark.parametrize(
    "error",
    [InfrastructureError("postgres down"), OSError(errno.ENOSPC, "No space left on device"),
     redis.ConnectionError("Connection refused"),
     ClaimBusyError("job j1 is being reflected by another delivery")],
    ids=["outage", "full-disk", "redis-down", "claim-busy"],
)  # fmt: skip
def test_what_ends_on_its_own_is_retried_past_the_retry_budget(
    error: Exception,
    failures: list[str],
    published: list[Signature],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outage ends when the service is back, another delivery's claim when it ends or
    its lease lapses: a run is never dropped for outliving them, only logged louder."""
    with pytest.raises(Retry):
        _run_at_retry(MAX_RETRIES + 40, error, monkeypatch)
    [sig] = published
    assert sig.options["retries"] == MAX_RETRIES + 41
    assert 1.0 <= sig.options["countdown"] <= 120.0
    assert failures == []
    [line] = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert line.levelname == "ERROR" and f"retry {MAX_RETRIES + 41}" in line.getMessage()


@pytest.mark.parametrize(
    ("error", "code"),
    [(LockBusyError("user alice is locked"), "lock_busy"),
     (LockLostError("the lock expired"), "lock_lost"),
     (PermissionError(errno.EACCES, "Permission denied"), "infrastructure"),
     (OSError(errno.ELOOP, "Too many levels of symbolic links"), "infrastructure")],
    ids=["lock-busy", "lock-lost", "permission", "planted-link"],
)  # fmt: skip
def test_what_may_not_clear_is_retried_within_the_budget_then_fails(
    error: Exception,
    code: str,
    failures: list[str],
    published: list[Signature],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(Retry):
        _run_at_retry(MAX_RETRIES - 1, error, monkeypatch)
    assert [r.levelname for r in caplog.records if "retrying" in r.getMessage()] == ["WARNING"]
    with pytest.raises(ReflectionFailed) as failed:
        _run_at_retry(MAX_RETRIES, error, monkeypatch)
    assert failed.value.error_code == code
    assert failures == [code]
    assert len(published) == 1


@pytest.mark.parametrize("pending", [True, False], ids=["journal-pending", "no-journal"])
def test_the_soft_time_limit_after_the_journal_is_retried_to_finish_it(
    pending: bool,
    failures: list[str],
    published: list[Signature],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run stopped by the soft time limit once its journal is written is to be
    finished (the retry only rolls the journal forward), not failed `time_limit`."""
    monkeypatch.setattr(reflect_module, "journal_pending", lambda deps, kwargs: pending)
    if pending:
        with pytest.raises(Retry):
            _run_at_retry(0, SoftTimeLimitExceeded(), monkeypatch)
        assert [sig.options["countdown"] for sig in published] == [1.0]
        assert failures == []
    else:
        with pytest.raises(ReflectionFailed, match=r"^time_limit: "):
            _run_at_retry(0, SoftTimeLimitExceeded(), monkeypatch)
        assert failures == ["time_limit"] and published == []


def _report(outcome: Outcome, **kw: Any) -> RunReport:
    return RunReport(
        outcome=outcome, reflection_job_id="task-1", original_job_id="j1", user_id="alice", **kw
    )


def test_a_failed_run_is_the_tasks_failure_with_its_code_and_a_masked_detail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task raises ReflectionFailed for a run that ended `failed` (Celery's FAILURE):
    the message starts with the code, then the detail on one line, credentials masked."""
    detail = "job j1 is not in jobs\n(key sk-proj-AbCdEf0123456789AbCdEf0123456789)"
    report = _report(Outcome.FAILED, error_code="job_not_found", detail=detail)
    monkeypatch.setattr(reflect_module, "get_deps", SimpleNamespace)
    monkeypatch.setattr(reflect_module, "run_reflection", lambda *a, **k: report)
    with pytest.raises(ReflectionFailed) as failed:
        reflect.run(**KWARGS)
    assert failed.value.error_code == "job_not_found"
    assert str(failed.value).startswith("job_not_found: job j1 is not in jobs (key ")
    assert "AbCdEf0123456789" not in str(failed.value) and "\n" not in str(failed.value)
    assert ReflectionFailed in reflect.throws


def test_a_failure_survives_pickling_as_a_prefork_child_hands_it_over() -> None:
    """A prefork child pickles the exception to its parent: code and detail come back."""
    import pickle

    failure = failure_of(_report(Outcome.FAILED, error_code="llm_auth", detail="x" * 500))
    again = pickle.loads(pickle.dumps(failure))
    assert (again.error_code, len(again.detail)) == ("llm_auth", 200)
    assert str(again) == str(failure)


def test_a_run_that_did_not_fail_returns_its_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """applied, abstained, rejected and duplicate are SUCCESS with the outcome string."""
    monkeypatch.setattr(reflect_module, "get_deps", SimpleNamespace)
    for outcome in (Outcome.APPLIED, Outcome.ABSTAINED, Outcome.REJECTED, Outcome.DUPLICATE):
        report = _report(outcome)
        monkeypatch.setattr(reflect_module, "run_reflection", lambda *a, r=report, **k: r)
        assert reflect.run(**KWARGS) == outcome.value
