"""Coalescing bursts (SPEC §12, §14) through the real pipeline, Postgres and Redis: runs
wait (deferred) for their burst to settle, the oldest leads one LLM call for the batch,
every job gets one metrics row, the followers' `coalesced` ones naming the leader."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from reflection import pipeline
from reflection.coalesce import DEFER_ROUND_TRIP_SECONDS
from reflection.errors import BatchWaitError, InfrastructureError
from reflection.models import Outcome
from reflection.storage import reflection_claims
from tests.integration.conftest import Env, decision

T0 = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def _task(job_id: str) -> str:
    return f"Task number {job_id.removeprefix('job-b')} of the burst"


# Each lesson's own words: lessons alike would be judged near-duplicates (SPEC §11).
LESSONS = {
    "fact-one": ("Invoices round half-up", "round_invoice() rounds half-up to whole cents."),
    "fact-two": ("CSV export streams its rows", "The export writes rows as it reads them."),
    "fact-two-alone": ("Staging first for deploys", "Every deploy goes through staging first."),
    "fact-three": ("Docs build with mkdocs", "The documentation site is built by mkdocs."),
}


def _entry(name: str, job_id: str) -> dict[str, Any]:
    """A change of `job_id` whose evidence quotes that job's request (SPEC §11)."""
    description, body = LESSONS[name]
    return {
        "op": "add",
        "name": name,
        "description": description,
        "type": "project",
        "body": body,
        "job_id": job_id,
        "evidence": [_task(job_id)],
    }


@pytest.fixture
def burst(env: Env, make_job: Any) -> Env:
    env.settings(coalesce_window_seconds=10, coalesce_max_wait_seconds=60, coalesce_max_jobs=5)
    for i in range(1, 4):
        make_job(f"job-b{i}", task=_task(f"job-b{i}"))
    return env


def _at(env: Env, seconds: float) -> None:
    env.deps.clock = lambda: T0 + timedelta(seconds=seconds)


def _waits(env: Env, job_id: str, rid: str) -> float:
    """The wait a deferred run was given (its countdown, plus the deferral's round trip
    that the countdown leaves out)."""
    with pytest.raises(BatchWaitError) as e:
        env.run(job_id, reflection_job_id=rid)
    return round(e.value.delay + DEFER_ROUND_TRIP_SECONDS, 6)


def test_a_burst_is_reflected_in_one_call_with_a_row_per_job(burst: Env) -> None:
    env = burst
    # The second change names job-b1 but quotes job-b2: quotes are judged against the
    # text of the job a change names, so it is unsupported (SPEC §11, §12).
    crossed = _entry("fact-two", "job-b1") | {"evidence": [_task("job-b2")]}
    changes = [_entry("fact-one", "job-b1"), crossed, _entry("fact-three", "job-b3")]
    env.script("job-b1", {"content": decision("two lessons", changes)})
    _at(env, 0)
    assert _waits(env, "job-b1", "r1") == pytest.approx(10)
    _at(env, 1)
    assert _waits(env, "job-b2", "r2") == pytest.approx(10)
    _at(env, 2)
    assert _waits(env, "job-b3", "r3") == pytest.approx(10)
    _at(env, 5)  # not quiet yet: the window runs from the last arrival
    assert _waits(env, "job-b1", "r1") == pytest.approx(7)
    _at(env, 12.5)  # quiet: the oldest leads; another gives it the time to
    assert 0 < _waits(env, "job-b2", "r2") <= 2
    report = env.run("job-b1", reflection_job_id="r1")
    assert report.outcome is Outcome.APPLIED
    assert [(v.name, v.code.value) for v in report.verdicts] == [
        ("fact-one", "ok"),
        ("fact-two", "unsupported"),
        ("fact-three", "ok"),
    ]
    assert env.llm_calls() == 1
    prompt = json.dumps(env.llm.requests[-1]["json"])
    for i in range(1, 4):
        assert f"Task number {i} of the burst" in prompt  # each job's own blocks
    rows = {r["reflection_job_id"]: r for r in env.metrics()}
    assert set(rows) == {"r1", "r2", "r3"}
    assert rows["r1"]["outcome"] == "applied" and rows["r1"]["tokens_in"] > 0
    for rid in ("r2", "r3"):
        assert rows[rid]["outcome"] == "coalesced"
        assert rows[rid]["coalesced_into"] == "r1"
        assert (rows[rid]["tokens_in"], rows[rid]["tokens_out"]) == (0, 0)
        assert rows[rid]["snapshot_id"] == rows["r1"]["snapshot_id"]
    u = env.user()
    assert LESSONS["fact-three"][1] in u.memory_file("fact-three").read_text()
    assert not u.memory_file("fact-two").exists()
    assert len(u.snapshot_index.read_text().splitlines()) == 1  # one snapshot
    with env.engine.connect() as conn:
        claims = conn.execute(select(reflection_claims)).mappings().all()
    assert {c["original_job_id"]: c["state"] for c in claims} == {
        "job-b1": "done",
        "job-b2": "done",
        "job-b3": "done",
    }
    assert all(c["batch"] is None and c["decision"] is None for c in claims)
    # The followers' own tasks end `coalesced`, with no call and no second row.
    for job, rid in (("job-b2", "r2"), ("job-b3", "r3")):
        assert env.run(job, reflection_job_id=rid).outcome is Outcome.COALESCED
    assert env.llm_calls() == 1
    assert len(env.metrics()) == 3


def test_a_follower_waits_while_its_batch_is_not_committed(
    burst: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held by a leader's live claim, a follower's run defers instead of running."""
    env = burst
    env.script("job-b1", {"content": decision("nothing")})
    _at(env, 0)
    _waits(env, "job-b1", "r1")
    _waits(env, "job-b2", "r2")
    _at(env, 11)
    with monkeypatch.context() as m:
        m.setattr(env.deps.llm, "decide", _raises(InfrastructureError("a network blip")))
        with pytest.raises(InfrastructureError):  # retried by the task
            env.run("job-b1", reflection_job_id="r1")
    assert _waits(env, "job-b2", "r2") > 0  # its job is in r1's batch, not committed
    assert env.run("job-b1", reflection_job_id="r1").outcome is Outcome.ABSTAINED
    assert env.run("job-b2", reflection_job_id="r2").outcome is Outcome.COALESCED
    assert sorted(r["outcome"] for r in env.metrics()) == ["abstained", "coalesced"]
    assert env.llm_calls() == 1


def _raises(error: Exception) -> Any:
    def fail(*args: Any, **kw: Any) -> Any:
        raise error

    return fail


def test_when_the_leader_fails_the_followers_are_reflected_on_their_own(burst: Env) -> None:
    env = burst
    env.settings(llm_max_attempts=1)
    env.script("job-b1", {"content": "not json at all"}, {"content": "still not json"})
    env.script("job-b2", {"content": decision("alone", [_entry("fact-two", "job-b2")])})
    _at(env, 0)
    _waits(env, "job-b1", "r1")
    _waits(env, "job-b2", "r2")
    _at(env, 11)
    assert env.run("job-b1", reflection_job_id="r1").outcome is Outcome.FAILED
    # The follower's claim was handed back: it waits its own window, then leads alone.
    _at(env, 12)
    assert _waits(env, "job-b2", "r2") == pytest.approx(10)
    _at(env, 23)
    assert env.run("job-b2", reflection_job_id="r2").outcome is Outcome.APPLIED
    rows = {r["reflection_job_id"]: r["outcome"] for r in env.metrics()}
    assert rows == {"r1": "failed", "r2": "applied"}
    assert env.user().memory_file("fact-two").exists()


def test_a_quiet_users_job_waits_the_window_and_no_longer(burst: Env) -> None:
    env = burst
    env.script("job-b1", {"content": decision("nothing")})
    _at(env, 0)
    assert _waits(env, "job-b1", "r1") == pytest.approx(10)
    _at(env, 10)
    assert env.run("job-b1", reflection_job_id="r1").outcome is Outcome.ABSTAINED
    assert env.llm_calls() == 1


def test_the_max_wait_bounds_a_burst_that_never_settles(burst: Env) -> None:
    env = burst
    env.settings(coalesce_max_wait_seconds=15)
    env.script("job-b1", {"content": decision("nothing")})
    _at(env, 0)
    _waits(env, "job-b1", "r1")
    _at(env, 9)
    _waits(env, "job-b2", "r2")
    _at(env, 14)
    assert _waits(env, "job-b1", "r1") == pytest.approx(1)  # its max wait, not the window
    _at(env, 15)
    assert env.run("job-b1", reflection_job_id="r1").outcome is Outcome.ABSTAINED
    rows = {r["reflection_job_id"]: r["outcome"] for r in env.metrics()}
    assert rows == {"r1": "abstained", "r2": "coalesced"}


def test_max_jobs_caps_a_batch(burst: Env, make_job: Any) -> None:
    env = burst
    env.settings(coalesce_max_jobs=2)
    env.script("job-b1", {"content": decision("nothing")})
    _at(env, 0)
    for i in range(1, 4):
        _waits(env, f"job-b{i}", f"r{i}")
    _at(env, 11)
    assert env.run("job-b1", reflection_job_id="r1").outcome is Outcome.ABSTAINED
    rows = {r["reflection_job_id"]: r["outcome"] for r in env.metrics()}
    assert rows == {"r1": "abstained", "r2": "coalesced"}  # b3 is left for its own run
    env.script("job-b3", {"content": decision("nothing")})
    assert env.run("job-b3", reflection_job_id="r3").outcome is Outcome.ABSTAINED
    assert env.llm_calls() == 2


def test_changes_of_a_job_taken_back_are_left_out(
    burst: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed leader whose follower was reflected meanwhile drops that job's changes:
    each job is reflected once."""
    env = burst
    changes = [_entry("fact-one", "job-b1"), _entry("fact-two", "job-b2")]
    env.script("job-b1", {"content": decision("two", changes)})
    env.settings(user_max_in_flight=0)
    _at(env, 0)
    _waits(env, "job-b1", "r1")
    _waits(env, "job-b2", "r2")
    _at(env, 11)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_apply", _raises(RuntimeError("a bug after the LLM answered")))
        with pytest.raises(RuntimeError):
            env.run("job-b1", reflection_job_id="r1")
    # The leader's lease on the follower ended: the follower takes its job back.
    env.script("job-b2", {"content": decision("alone", [_entry("fact-two-alone", "job-b2")])})
    _at(env, 12)
    _waits(env, "job-b2", "r2")
    _at(env, 23)
    assert env.run("job-b2", reflection_job_id="r2").outcome is Outcome.APPLIED
    assert env.run("job-b1", reflection_job_id="r1").outcome is Outcome.APPLIED
    u = env.user()
    assert u.memory_file("fact-one").exists()
    assert u.memory_file("fact-two-alone").exists()
    assert not u.memory_file("fact-two").exists()  # its batch change was left out
    rows = {r["reflection_job_id"]: r["outcome"] for r in env.metrics()}
    assert rows == {"r1": "applied", "r2": "applied"}
