"""Every run has a deadline, in every pool (issue 22, item 1; SPEC §14).

Celery's soft time limit stops a run only in the prefork pool. The pipeline's own
deadline (the soft time limit from the run's start) is checked between the stages and
before each write: a run past it stops with `time_limit`, its slot and its user lock
freed, instead of going on. The clock here is a fake one, moved past the deadline at a
fault point, so nothing depends on the machine's speed.

That a threads worker keeps serving other users while one user's folder is full of
FIFOs, and that SIGTERM then ends it within the soft shutdown, is
tests/hostile/test_special_files_worker.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from reflection import deadline as run_deadline
from reflection import faults
from reflection.constants import USER_LOCK_PREFIX, USER_SLOTS_PREFIX
from reflection.errors import JournalPendingError
from reflection.models import Outcome
from reflection.storage import reflection_claims
from tests.hostile.conftest import Hostile, add, decision, expect

pytestmark = pytest.mark.integration


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock()
    monkeypatch.setattr(run_deadline, "now", c)
    yield c
    faults.install(None)


def jump_at(point: str, clock: Clock, seconds: float = 10_000) -> None:
    """At fault point `point`, once, move the clock `seconds` on (a stalled run)."""
    fired: list[str] = []

    def hook(name: str) -> None:
        if name == point and not fired:
            fired.append(name)
            clock.t += seconds

    faults.install(hook)


def claim_state(h: Hostile) -> str:
    with h.env.engine.connect() as conn:
        return str(conn.execute(select(reflection_claims.c.state)).scalar_one())


def freed(h: Hostile, uid: str = "alice") -> bool:
    """The user's in-flight slots and lock are free."""
    r = h.env.deps.redis
    return r.zcard(USER_SLOTS_PREFIX + uid) == 0 and not r.exists("lock:" + USER_LOCK_PREFIX + uid)


@pytest.mark.parametrize(("point", "llm_calls"), [("before_llm", 0), ("after_llm", 1)])
def test_a_run_past_its_deadline_between_stages_stops_with_time_limit(
    hostile: Hostile, clock: Clock, point: str, llm_calls: int
) -> None:
    """Past the deadline before the LLM (or before its decision is stored and applied),
    the run fails `time_limit` with a metrics row, writes nothing, asks the LLM no more,
    and frees its slot; the claim is released for a later publish."""
    jump_at(point, clock)
    report = hostile.run("job-late", decision("r", [add("fact")]))
    expect(report, "time_limit")
    assert "deadline" in report.detail
    assert hostile.env.llm_calls() == llm_calls
    assert claim_state(hostile) == "failed"
    assert freed(hostile)


def test_a_run_past_its_deadline_in_its_writes_stops_and_its_retry_finishes(
    hostile: Hostile, clock: Clock
) -> None:
    """Past the deadline between two writes of its roll-forward (the journal written),
    the run stops before the next write, its lock freed, and asks to be retried; the
    retry (same task) finishes the journal without asking the LLM again."""
    h = hostile
    h.job("job-slow", user_id="alice", piece_name="default")
    h.env.script("job-slow", {"content": decision("r", [add("fact")])})
    jump_at("between_writes", clock)
    with pytest.raises(JournalPendingError, match="deadline"):
        h.env.run("job-slow", reflection_job_id="task-1")
    assert freed(h)
    assert list(h.user().journal_dir.glob("*.json")), "the journal should be left to finish"
    report = h.env.run("job-slow", reflection_job_id="task-1")
    assert report.outcome is Outcome.APPLIED
    assert h.env.llm_calls() == 1
    assert claim_state(h) == "done"
    assert not list(h.user().journal_dir.glob("*.json"))
    assert (h.user().memory_dir / "fact.md").is_file()


def test_a_run_within_its_deadline_is_not_stopped(hostile: Hostile, clock: Clock) -> None:
    """The checks cost a run within its budget nothing: a stall shorter than the soft
    time limit (here 100 s of a 870 s budget) changes nothing."""
    jump_at("after_llm", clock, seconds=100)
    expect(hostile.run("job-ok", decision("r", [add("fact")])), ["ok"])
