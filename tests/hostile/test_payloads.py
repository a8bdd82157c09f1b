"""Hostile task payloads: every one ends `failed` with a precise code and a metrics row,
nothing on disk changes, no LLM call is made, and the worker keeps serving."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import pytest

from reflection.errors import ReflectionFailed
from reflection.models import Outcome
from tests.hostile.conftest import Hostile, add, decision, expect

pytestmark = pytest.mark.integration

GOOD: dict[str, Any] = {
    "original_job_id": "job-ok",
    "user_id": "alice",
    "piece_name": "default",
    "outcome": "succeeded",
}


def kw(**changes: Any) -> dict[str, Any]:
    """The good kwargs with `changes` applied; a value of `...` removes the key."""
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


# (case id, kwargs, expected failure code)
PAYLOADS: list[tuple[str, dict[str, Any], str]] = [
    ("missing-outcome", kw(outcome=...), "bad_request"),
    ("missing-user", kw(user_id=...), "bad_request"),
    ("missing-everything", {}, "bad_request"),
    ("extra-kwarg", kw(grant="admin"), "bad_request"),
    ("user-int", kw(user_id=42), "bad_request"),
    ("user-none", kw(user_id=None), "bad_request"),
    ("user-list", kw(user_id=["alice"]), "bad_request"),
    ("user-dotdot", kw(user_id=".."), "bad_request"),
    ("user-traversal", kw(user_id="../bob"), "bad_request"),
    ("user-slash", kw(user_id="alice/memory"), "bad_request"),
    ("user-absolute", kw(user_id="/etc"), "bad_request"),
    ("user-nul", kw(user_id="alice\x00"), "bad_request"),
    ("user-newline", kw(user_id="alice\n"), "bad_request"),
    ("user-homoglyph", kw(user_id="\u0430lice"), "bad_request"),
    ("user-megabytes", kw(user_id="a" * 2_000_000), "bad_request"),
    ("job-traversal", kw(original_job_id="../../etc/passwd"), "bad_request"),
    ("job-control-chars", kw(original_job_id="job\x1b[31m\r\n"), "bad_request"),
    ("job-megabytes", kw(original_job_id="j" * 3_000_000), "bad_request"),
    ("job-dict", kw(original_job_id={"$ne": None}), "bad_request"),
    ("piece-traversal", kw(piece_name="../default"), "bad_request"),
    ("piece-upper", kw(piece_name="Default"), "bad_request"),
    ("piece-nul", kw(piece_name="default\x00.yaml"), "bad_request"),
    ("piece-with-suffix", kw(piece_name="default.yaml"), "bad_request"),
    ("outcome-unknown", kw(outcome="exploded"), "bad_request"),
    ("outcome-list", kw(outcome=["succeeded"]), "bad_request"),
    ("outcome-case", kw(outcome="SUCCEEDED"), "bad_request"),
]


@pytest.mark.parametrize(("case", "kwargs", "code"), PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_hostile_payload_is_refused(
    hostile: Hostile, case: str, kwargs: dict[str, Any], code: str
) -> None:
    """A malformed or unsafe payload fails with its code, a safe metrics row, no LLM call."""
    report = hostile.run("job-ok", make_job=False, kwargs=kwargs)
    expect(report, code)
    assert hostile.env.llm_calls() == 0
    [row] = hostile.env.metrics()
    assert row["error_code"] == code and row["outcome"] == "failed"


# Well-formed payloads that name something they may not: (case id, job row, kwargs, code)
MISMATCHES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("job-unknown", {}, kw(original_job_id="job-nope"), "job_not_found"),
    ("job-of-another-user", {"user_id": "bob"}, kw(), "input_mismatch"),
    ("job-of-another-piece", {"piece_name": "bug-triage"}, kw(), "input_mismatch"),
    (
        "piece-unknown",
        {"piece_name": "no-such-piece"},
        kw(piece_name="no-such-piece"),
        "piece_not_found",
    ),
]


@pytest.mark.parametrize(
    ("case", "job", "kwargs", "code"), MISMATCHES, ids=[m[0] for m in MISMATCHES]
)
def test_payload_naming_what_it_may_not_is_refused(
    hostile: Hostile, case: str, job: dict[str, Any], kwargs: dict[str, Any], code: str
) -> None:
    """A job of another user or piece, or an unknown job or piece, fails before the LLM."""
    hostile.job("job-ok", **job)
    hostile.env.script("job-ok", {"content": decision("x", [add("stolen")])})
    report = hostile.run("job-ok", make_job=False, kwargs=kwargs)
    expect(report, code)
    assert hostile.env.llm_calls() == 0


def test_hostile_task_id_is_only_an_identifier(hostile: Hostile) -> None:
    """A task id full of traversal and control characters never becomes a path."""
    report = hostile.run(
        "job-tid", decision("nothing"), reflection_job_id="../../outside/x\x00\n" + "z" * 500
    )
    assert report.outcome is Outcome.ABSTAINED
    assert report.snapshot_dir is not None
    assert report.snapshot_dir.parent == hostile.user().reflections_dir
    assert len(report.reflection_job_id) <= 128 and report.reflection_job_id.isprintable()


def test_worker_keeps_serving_after_hostile_payloads(hostile: Hostile) -> None:
    """After a burst of hostile payloads a good job is reflected normally."""
    for _, kwargs, _ in PAYLOADS:
        assert hostile.run("job-ok", make_job=False, kwargs=kwargs).outcome is Outcome.FAILED
    report = hostile.run("job-good", decision("learned", [add("prefers-pytest")]))
    assert report.outcome is Outcome.APPLIED
    assert len(hostile.env.metrics()) == len(PAYLOADS) + 1


def test_task_adapter_refuses_positional_args(hostile: Hostile, monkeypatch: Any) -> None:
    """`reflect` called with positional args fails `bad_request` with a row, no retry."""
    task_module = importlib.import_module("tasks.reflect")  # `tasks.reflect` is the task
    monkeypatch.setattr(task_module, "get_deps", lambda: hostile.env.deps)
    hostile.job("job-pos")
    task_id = str(uuid.uuid4())
    result = task_module.reflect.apply(
        args=("job-pos", "alice", "default", "succeeded"), task_id=task_id
    )
    assert result.state == "FAILURE" and isinstance(result.result, ReflectionFailed)
    assert result.result.error_code == "bad_request"
    [row] = hostile.env.metrics()
    assert row["reflection_job_id"] == task_id and row["error_code"] == "bad_request"
    assert hostile.env.llm_calls() == 0


def test_task_adapter_refuses_hostile_kwargs_without_retry(
    hostile: Hostile, monkeypatch: Any
) -> None:
    """Through the Celery task, a traversal user id fails once (FAILURE), not retried."""
    task_module = importlib.import_module("tasks.reflect")  # `tasks.reflect` is the task
    monkeypatch.setattr(task_module, "get_deps", lambda: hostile.env.deps)
    result = task_module.reflect.apply(kwargs=kw(user_id="../../root"))
    assert result.state == "FAILURE" and isinstance(result.result, ReflectionFailed)
    assert result.result.error_code == "bad_request"
    [row] = hostile.env.metrics()
    assert row["error_code"] == "bad_request" and row["user_id"] == "../../root"
