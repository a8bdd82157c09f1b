"""Failure handling of one run: LLM outages, a lost lock, a stale writer, poison."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from sqlalchemy import select, update

from reflection.constants import USER_LOCK_PREFIX, USER_SLOTS_PREFIX
from reflection.errors import (
    InternalError,
    LockBusyError,
    LockLostError,
    ReflectionError,
    UserBusyError,
)
from reflection.faults import Point
from reflection.models import Outcome
from reflection.pipeline import record_failure
from reflection.storage import reflection_claims
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import PYTEST_ENTRY, index_lines

pytestmark = pytest.mark.integration


def task_records_failure(env: Env, job_id: str, rid: str, error: ReflectionError) -> None:
    """What the task does when a run ends `failed` outside the pipeline (a bug, the
    time limit, a retry budget spent)."""
    kwargs = {
        "original_job_id": job_id,
        "user_id": "alice",
        "piece_name": "default",
        "outcome": "succeeded",
    }
    record_failure(env.deps, reflection_job_id=rid, kwargs=kwargs, error=error)


def test_llm_unavailable_records_its_attempts(env: Env, make_job: Any) -> None:
    """5xx on every attempt: failed llm_unavailable, the row says how many attempts."""
    env.settings(llm_outage_retry_hours=0)  # no outage window: fail as the outage is met
    make_job("job-5xx")
    env.script("job-5xx", {"status": 503, "error": "overloaded"})
    report = env.run("job-5xx")
    assert report.error_code == "llm_unavailable"
    [row] = env.metrics()
    assert row["llm_attempts"] == env.deps.settings.llm_max_attempts == env.llm_calls()


def test_an_answer_that_never_validates_records_the_tokens_it_cost(env: Env, make_job: Any) -> None:
    make_job("job-junk")
    usage = {"prompt_tokens": 100, "completion_tokens": 5}
    env.script(
        "job-junk",
        {"content": "not json", "usage": usage},
        {"content": "still not json", "usage": usage},
    )
    assert env.run("job-junk").error_code == "llm_invalid_output"
    [row] = env.metrics()
    assert row["llm_attempts"] == 2 == env.llm_calls()
    assert (row["tokens_in"], row["tokens_out"]) == (200, 10)


def test_a_run_that_fails_after_the_llm_answered_records_its_tokens(
    env: Env, make_job: Any, tmp_path: Path
) -> None:
    """A symlink planted where the snapshot goes is found only when the run plans its
    writes: the run fails `input_invalid`, and its row still says what the LLM cost."""
    make_job("job-planted")
    usage = {"prompt_tokens": 120, "completion_tokens": 30}
    env.script("job-planted", {"content": decision("x", [PYTEST_ENTRY]), "usage": usage})
    (tmp_path / "elsewhere").mkdir()
    home = env.deps.settings.user_folder_root / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "reflections").symlink_to(tmp_path / "elsewhere")
    assert env.run("job-planted").error_code == "input_invalid"
    [row] = env.metrics()
    assert (row["tokens_in"], row["tokens_out"]) == (120, 30)
    assert row["model"] == "scripted-1" and row["llm_attempts"] == 1
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_rate_limited_then_answered_counts_attempts(env: Env, make_job: Any) -> None:
    """429 then a good answer: applied, and the row counts both requests."""
    make_job("job-429")
    env.script(
        "job-429",
        {"status": 429, "error": "slow down", "headers": {"Retry-After": "0"}},
        {"content": decision("x", [PYTEST_ENTRY])},
    )
    assert env.run("job-429").outcome is Outcome.APPLIED
    assert env.metrics()[0]["llm_attempts"] == 2


def test_a_lost_lock_stops_the_run_before_its_next_write(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock expires mid-apply (a process paused past the lock's expiry, and the lock
    taken meanwhile): no further write happens, the run is retryable, and the retry
    completes it exactly once from the journal. (A lock confirmed less than a third of
    its expiry ago is not asked again: it cannot have expired.)"""
    import reflection.apply as apply_mod
    import reflection.lock as lock_mod

    make_job("job-lost")
    env.script("job-lost", {"content": decision("x", [PYTEST_ENTRY])})
    real = apply_mod.write_snapshot  # type: ignore[attr-defined]
    key = "lock:" + USER_LOCK_PREFIX + "alice"
    paused = [0.0]

    def steal(*a: Any, **kw: Any) -> Any:
        paused[0] = env.deps.settings.lock_expire_seconds + 1.0
        env.deps.redis.set(key, "another-worker")  # our lease is gone
        return real(*a, **kw)

    monkeypatch.setattr(
        lock_mod, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + paused[0])
    )
    monkeypatch.setattr(apply_mod, "write_snapshot", steal)
    with pytest.raises(LockLostError):
        env.run("job-lost", reflection_job_id="rid-lost")
    assert env.metrics() == []  # the commit never ran
    env.deps.redis.delete(key)
    monkeypatch.setattr(apply_mod, "write_snapshot", real)
    assert env.run("job-lost", reflection_job_id="rid-lost").outcome is Outcome.APPLIED
    assert len(index_lines(env)) == 1
    assert [r["outcome"] for r in env.metrics()] == ["applied"]
    assert env.llm_calls() == 1


def test_a_run_paused_past_its_lease_between_two_files_writes_neither_more(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused between its memory file and MEMORY.md for longer than the lock's expiry
    (and the lock taken meanwhile), the run finds out before its next write, not at its
    commit: it must not overwrite what the lock's next holder wrote."""
    import reflection.apply as apply_mod
    import reflection.lock as lock_mod

    make_job("job-paused")
    env.script("job-paused", {"content": decision("x", [PYTEST_ENTRY])})
    key = "lock:" + USER_LOCK_PREFIX + "alice"
    paused = [0.0]
    real_fault_point = apply_mod.fault_point  # type: ignore[attr-defined]

    def pause(name: Point) -> None:
        if name == "between_writes":
            paused[0] = env.deps.settings.lock_expire_seconds + 1.0
            env.deps.redis.set(key, "another-worker")
        real_fault_point(name)

    clock = SimpleNamespace(monotonic=lambda: time.monotonic() + paused[0])
    monkeypatch.setattr(lock_mod, "time", clock)
    monkeypatch.setattr(apply_mod, "fault_point", pause)
    with pytest.raises(LockLostError):
        env.run("job-paused", reflection_job_id="rid-paused")
    home = env.user("alice")
    assert home.memory_file("prefers-pytest").exists()
    assert not home.memory_index.exists()  # the next write did not happen
    assert index_lines(env) == [] and env.metrics() == []

    env.deps.redis.delete(key)
    monkeypatch.setattr(apply_mod, "fault_point", real_fault_point)
    assert env.run("job-paused", reflection_job_id="rid-paused").outcome is Outcome.APPLIED
    assert "prefers-pytest" in home.memory_index.read_text()
    assert len(index_lines(env)) == 1 and env.llm_calls() == 1


def taken_over_while_planning(env: Env, monkeypatch: pytest.MonkeyPatch, by: str) -> None:
    """From now on (until `monkeypatch.undo()`), another delivery (`by`) takes the
    claim over while a run plans its writes."""
    import reflection.pipeline as pipeline_mod

    real = pipeline_mod.plan  # type: ignore[attr-defined]

    def take_over(*a: Any, **kw: Any) -> Any:
        with env.engine.begin() as conn:
            conn.execute(
                update(reflection_claims).values(
                    fence=reflection_claims.c.fence + 1, reflection_job_id=by
                )
            )
        return real(*a, **kw)

    monkeypatch.setattr(pipeline_mod, "plan", take_over)


def test_stale_writer_commits_nothing_and_its_work_lands_once(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose claim was taken over (fence moved on) may not commit; the delivery that
    took over completes the stale run's journal instead, so files and rows land once."""
    make_job("job-stale")
    env.script("job-stale", {"content": decision("x", [PYTEST_ENTRY])})
    taken_over_while_planning(env, monkeypatch, by="rid-b")
    with pytest.raises(LockLostError, match="taken over"):
        env.run("job-stale", reflection_job_id="rid-a")
    assert env.metrics() == []
    monkeypatch.undo()
    report = env.run("job-stale", reflection_job_id="rid-b")
    assert report.outcome is Outcome.APPLIED
    assert [r["outcome"] for r in env.metrics()] == ["applied"]
    assert len(index_lines(env)) == 1
    assert env.llm_calls() == 1


def test_poison_after_too_many_crashed_deliveries(env: Env, make_job: Any) -> None:
    """A job whose deliveries keep dying is failed as poison instead of looping."""
    make_job("job-poison")
    env.settings(max_deliveries=2)
    with env.engine.begin() as conn:
        conn.execute(
            reflection_claims.insert().values(
                original_job_id="job-poison",
                reflection_job_id="rid-p",
                user_id="alice",
                state="running",
                fence=1,
                deliveries=2,
                lease_expires_at="2100-01-01T00:00:00Z",
            )
        )
    report = env.run("job-poison", reflection_job_id="rid-p")
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "poison")
    assert env.llm_calls() == 0


def test_clean_failures_and_outages_are_not_counted_as_crashes(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Poison is for deliveries that crash. A job that failed cleanly and was published
    again (`reflection backfill`), or whose runs met a full disk, is not poison."""
    import reflection.pipeline as pipeline_mod

    make_job("job-again")
    # No outage window, and the breaker lets the next run probe at once: each run meets
    # the outage itself and fails.
    env.settings(max_deliveries=2, llm_outage_retry_hours=0, llm_outage_probe_seconds=0.001)
    env.script("job-again", *[{"status": 503, "error": "overloaded"}] * 12)
    for n in range(3):
        assert env.run("job-again", reflection_job_id=f"rid-{n}").error_code == "llm_unavailable"

    make_job("job-disk")
    env.script("job-disk", {"content": decision("x", [PYTEST_ENTRY])})

    def full_disk(*a: Any, **k: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline_mod, "write_journal", full_disk)
    for _ in range(3):  # the task retries these (same id) until the disk has room
        with pytest.raises(OSError):
            env.run("job-disk", reflection_job_id="rid-disk")
    monkeypatch.undo()
    assert env.run("job-disk", reflection_job_id="rid-disk").outcome is Outcome.APPLIED
    assert env.llm_calls() == 3 * env.deps.settings.llm_max_attempts + 1


def stopped_after_journal(
    env: Env, monkeypatch: pytest.MonkeyPatch, job_id: str, reflection_job_id: str
) -> None:
    """Run `job_id` and stop it with a bug right after its journal, as the task records
    it (`failed`); the journal stays for the user's next run."""
    import reflection.apply as apply_mod

    real_fault_point = apply_mod.fault_point  # type: ignore[attr-defined]

    def stop(name: str) -> None:
        if name == "after_journal":
            raise RuntimeError("a bug")

    monkeypatch.setattr(apply_mod, "fault_point", stop)
    with pytest.raises(RuntimeError):
        env.run(job_id, reflection_job_id=reflection_job_id)
    task_records_failure(env, job_id, reflection_job_id, InternalError("RuntimeError: a bug"))
    monkeypatch.setattr(apply_mod, "fault_point", real_fault_point)


def test_a_run_stopped_after_its_journal_is_finished_by_the_next_and_its_row_corrected(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (or the soft time limit) stops a run after its journal: the task records it
    `failed`, and the claim's lease ends at once. The user's next run finishes the
    journal, leaves a file written since as it is, and the failed row becomes the run's
    real one."""
    make_job("job-stopped")
    env.script("job-stopped", {"content": decision("x", [PYTEST_ENTRY])})
    stopped_after_journal(env, monkeypatch, "job-stopped", "rid-stopped")
    with env.engine.connect() as conn:
        lease = conn.execute(
            select(reflection_claims.c.lease_expires_at).where(
                reflection_claims.c.original_job_id == "job-stopped"
            )
        ).scalar_one()
    assert lease <= datetime.now(UTC)  # a republish need not wait for it
    home = env.user("alice")
    entry = home.memory_file("prefers-pytest")
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text("written by hand since\n")

    make_job("job-next")
    env.script("job-next", {"content": decision("nothing")})
    assert env.run("job-next").outcome is Outcome.ABSTAINED
    assert entry.read_text() == "written by hand since\n"
    assert "prefers-pytest" in home.memory_index.read_text()
    rows = {r["reflection_job_id"]: r for r in env.metrics()}
    assert rows["rid-stopped"]["outcome"] == "applied"
    assert rows["rid-stopped"]["error_code"] is None
    assert len(index_lines(env)) == 2


def test_a_link_planted_where_a_journal_writes_is_replaced_not_followed(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Planted after the run checked its paths, a link at a file it is about to write
    is replaced by the file (an atomic rename never follows it); what it points at is
    untouched, and the run is neither failed nor retried for it."""
    import reflection.apply as apply_mod

    make_job("job-link")
    env.script("job-link", {"content": decision("x", [PYTEST_ENTRY])})
    outside = tmp_path / "outside.md"
    outside.write_text("not the user's\n")
    entry = env.user("alice").memory_file("prefers-pytest")
    real_fault_point = apply_mod.fault_point  # type: ignore[attr-defined]

    def plant(name: Point) -> None:
        if name == "after_journal":
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.symlink_to(outside)
        real_fault_point(name)

    monkeypatch.setattr(apply_mod, "fault_point", plant)
    assert env.run("job-link").outcome is Outcome.APPLIED
    assert not entry.is_symlink() and "pytest fixtures" in entry.read_text()
    assert outside.read_text() == "not the user's\n"


def test_a_run_failed_after_its_retries_hands_its_claim_on_at_once(env: Env, make_job: Any) -> None:
    """A lock held elsewhere past every retry: the task records the failure, and the
    claim's lease ends with it. A republish is not `claim_busy` for the rest of the
    lease; it takes the claim over and reuses the stored decision."""
    make_job("job-held")
    env.script("job-held", {"content": decision("x", [PYTEST_ENTRY])})
    key = "lock:" + USER_LOCK_PREFIX + "alice"
    env.deps.redis.set(key, "another-worker", ex=60)
    with pytest.raises(LockBusyError):
        env.run("job-held", reflection_job_id="rid-held")
    task_records_failure(env, "job-held", "rid-held", LockBusyError("user alice is locked"))
    env.deps.redis.delete(key)
    assert env.run("job-held", reflection_job_id="rid-again").outcome is Outcome.APPLIED
    assert env.llm_calls() == 1
    assert [r["outcome"] for r in env.metrics()] == ["failed", "applied"]


def test_a_user_at_its_cap_is_deferred_before_any_claim(
    env: Env, make_job: Any, redis_client: redis.Redis
) -> None:
    """With the user's slots all held, a run takes no claim and asks no LLM: it raises
    `UserBusyError` for the adapter to defer; once a slot frees, it runs normally."""
    env.settings(user_max_in_flight=1)
    make_job("job-cap")
    env.script("job-cap", {"content": decision("x", [PYTEST_ENTRY])})
    redis_client.zadd(USER_SLOTS_PREFIX + "alice", {"other-run": time.time()})
    with pytest.raises(UserBusyError) as busy:
        env.run("job-cap")
    assert busy.value.delay > 0  # booked for when the held slot should free
    with env.engine.connect() as conn:
        assert conn.execute(select(reflection_claims)).first() is None
    assert env.llm_calls() == 0 and env.metrics() == []
    redis_client.zrem(USER_SLOTS_PREFIX + "alice", "other-run")
    assert env.run("job-cap").outcome == Outcome.APPLIED
    assert redis_client.zcard(USER_SLOTS_PREFIX + "alice") == 0


def test_a_run_past_its_deadline_fails_time_limit_in_any_pool(env: Env, make_job: Any) -> None:
    """The pipeline's own deadline (REFLECTION_TASK_TIME_LIMIT's soft limit, 5 s here)
    stops an LLM that answers too late, without Celery's help: failed `time_limit` with a
    metrics row, and the claim released so a later publish may try again."""
    env.settings(task_time_limit=10, llm_timeout_seconds=30)
    make_job("job-slow")
    env.script("job-slow", {"content": decision("late", [PYTEST_ENTRY]), "delay": 8})
    report = env.run("job-slow")
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "time_limit")
    [row] = env.metrics()
    assert row["error_code"] == "time_limit"
    with env.engine.connect() as conn:
        [claim] = conn.execute(select(reflection_claims)).mappings().all()
    assert claim["state"] == "failed"
