"""How the task re-sends itself: a retry Celery cannot publish hands the delivery back
instead of dropping it, and a deferral is a cheap retry that counts none.

Celery's own `Task.retry` runs here (the broker is refused at its publish): it turns the
failure into `Reject(requeue=False)`, which would ack the delivery and lose the run.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import kombu.exceptions
import pytest
from celery.canvas import Signature
from celery.exceptions import Reject, Retry

from reflection.errors import InfrastructureError, UserBusyError
from tasks.reflect import REQUEUE_PAUSE_SECONDS, _retry, reflect

reflect_module = importlib.import_module("tasks.reflect")  # `tasks.reflect` is also the task

KWARGS = {"original_job_id": "j1", "user_id": "alice", "piece_name": "default",
          "outcome": "succeeded"}  # fmt: skip


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
