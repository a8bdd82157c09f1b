"""The pure rules of coalescing (reflection.coalesce) and the batch prompt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reflection.batch_prompt import batch_prompt, log_share
from reflection.burst import Arrival
from reflection.changes import Limits, judge_memory_changes
from reflection.coalesce import (
    BATCH_POLL_SECONDS,
    LEADER_GRACE_SECONDS,
    Member,
    countdown,
    dump_members,
    follower,
    followers_to_take,
    load_members,
    outside,
    poll_seconds,
    wait_seconds,
    without_jobs,
)
from reflection.errors import ContextOverflowError
from reflection.models import (
    ActivityLog,
    Code,
    Job,
    LlmDecision,
    LlmResult,
    MemoryChange,
    MemoryEntry,
    Outcome,
    Piece,
    ReflectionInputs,
    ReflectRequest,
    Usage,
)
from reflection.pipeline import stored_decision
from reflection.prompt import fit_prompt
from reflection.records import MetricsRow, StoredDecision


def _arrivals(*pairs: tuple[str, float]) -> list[Arrival]:
    return [Arrival(job, at, f"r-{job}", "succeeded") for job, at in pairs]


# now, job, arrivals (oldest first), window, max wait -> seconds still to wait
WAITS: list[tuple[float, str, list[tuple[str, float]], float, float, float]] = [
    (0, "a", [("a", 0)], 10, 60, 10),  # alone: the window
    (10, "a", [("a", 0)], 10, 60, 0),  # alone, quiet: leads, no later than the window
    (5, "a", [("a", 0), ("b", 4)], 10, 60, 9),  # a new arrival restarts the window
    (14, "a", [("a", 0), ("b", 4)], 10, 60, 0),  # quiet: the oldest leads
    (14, "b", [("a", 0), ("b", 4)], 10, 60, BATCH_POLL_SECONDS),  # the others let it
    (14 + LEADER_GRACE_SECONDS, "b", [("a", 0), ("b", 4)], 10, 60, 0),  # unless it is gone
    (50, "a", [("a", 0), ("b", 45)], 10, 60, 5),
    (55, "a", [("a", 0), ("b", 50)], 10, 60, 5),  # the max wait bounds the wait
    (60, "a", [("a", 0), ("b", 59)], 10, 60, 0),  # past it: leads at once
    (3, "a", [("a", 0)], 0, 60, 0),  # window 0: never waits
    (0, "x", [("a", 0)], 10, 60, 0),  # not registered: nothing to wait for
    (9.9, "a", [("a", 0)], 10, 60, 0),  # a tenth of a second is not worth a deferral
    (13.9, "b", [("a", 0), ("b", 4)], 10, 60, BATCH_POLL_SECONDS),  # nor is it the lead
    (55, "a", [("a", 0), ("b", 54.9)], 10, 55.1, 0),  # nor a tenth left of the max wait
]


@pytest.mark.parametrize(("now", "job", "pairs", "window", "max_wait", "expected"), WAITS)
def test_wait_seconds(
    now: float,
    job: str,
    pairs: list[tuple[str, float]],
    window: float,
    max_wait: float,
    expected: float,
) -> None:
    got = wait_seconds(now, job, _arrivals(*pairs), window=window, max_wait=max_wait)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(("held_for", "expected"), [(0, 2), (8, 2), (40, 10), (600, 30)])
def test_a_follower_polls_less_often_the_longer_its_batch_takes(
    held_for: float, expected: float
) -> None:
    assert poll_seconds(held_for) == expected


@pytest.mark.parametrize(("wait", "expected"), [(10, 9.9), (0.5, 0.4), (0.15, 0.05)])
def test_a_countdown_leaves_out_the_deferrals_round_trip(wait: float, expected: float) -> None:
    assert countdown(wait) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("max_jobs", "expected"),
    [(1, []), (2, ["b"]), (3, ["b", "c"]), (10, ["b", "c", "d"])],
)
def test_followers_are_the_oldest_others_up_to_max_jobs(max_jobs: int, expected: list[str]) -> None:
    arrivals = _arrivals(("b", 1), ("a", 2), ("c", 3), ("d", 4))
    assert [a.job_id for a in followers_to_take(arrivals, "a", max_jobs)] == expected


def _stored(*jobs: str | None) -> StoredDecision:
    changes = [MemoryChange(op="remove", name=f"n{i}", job_id=j) for i, j in enumerate(jobs)]
    result = LlmResult(
        decision=LlmDecision(reasoning="r", memory_changes=changes),
        raw="{}",
        model="m",
        usage=Usage(tokens_in=5),
    )
    return StoredDecision.of(result, None)


def test_without_jobs_drops_only_the_changes_of_jobs_that_left() -> None:
    stored = _stored("a", "b", None, "c")
    kept = without_jobs(stored, {"b", "c"})
    assert [c.job_id for c in kept.result.decision.memory_changes] == ["a", None]
    assert kept.result.usage == stored.result.usage
    assert without_jobs(stored, set()) is stored


def test_without_jobs_keeps_each_kept_changes_secret_verdict() -> None:
    leaked = MemoryChange(op="add", name="leak", body=f"token {TOKEN}", job_id="b")
    clean = MemoryChange(op="add", name="clean", body="no secret here", job_id="a")
    result = LlmResult(
        decision=LlmDecision(reasoning="r", memory_changes=[clean, leaked, clean]),
        raw="{}",
        model="m",
        usage=Usage(),
    )
    stored = StoredDecision.of(result, None)
    assert [bool(s) for s in stored.secrets] == [False, True, False]
    kept = without_jobs(stored, {"a"})
    assert [c.name for c in kept.result.decision.memory_changes] == ["leak"]
    assert [bool(s) for s in kept.secrets] == [True]  # the verdict moved with its change


def test_outside_names_the_jobs_not_in_the_batch() -> None:
    assert outside(_stored("a", "b", None, "zz"), ["a", "b"]) == {"zz"}
    assert outside(_stored(None), ["a"]) == set()


def test_a_followers_row_is_coalesced_into_the_leader_with_no_tokens() -> None:
    leader = MetricsRow(
        reflection_job_id="r1",
        original_job_id="j1",
        user_id="alice",
        piece_name="default",
        outcome=Outcome.APPLIED,
        tokens_in=900,
        tokens_out=80,
        memory_changes=3,
        model="m",
        snapshot_id="s1",
    )
    f = follower(
        leader, Member(original_job_id="j2", reflection_job_id="r2", outcome="failed", fence=3)
    )
    assert (f.original_job_id, f.fence) == ("j2", 3)
    row = f.metrics
    assert (row.reflection_job_id, row.original_job_id, row.outcome) == (
        "r2",
        "j2",
        Outcome.COALESCED,
    )
    assert (row.coalesced_into, row.snapshot_id, row.user_id) == ("r1", "s1", "alice")
    assert (row.tokens_in, row.tokens_out, row.memory_changes) == (0, 0, 0)


@pytest.mark.parametrize("text", [None, "", "not json", '{"a": 1}', '[{"x": 1}]'])
def test_an_unreadable_stored_batch_is_none(text: str | None) -> None:
    assert load_members(text) == []


def test_a_stored_batch_reads_back() -> None:
    members = [Member(original_job_id="j2", reflection_job_id="r2", outcome="succeeded", fence=2)]
    assert load_members(dump_members(members)) == members


@pytest.mark.parametrize(("jobs", "share"), [(1, 4096), (2, 2048), (5, 819), (100, 256)])
def test_the_log_budget_is_shared(jobs: int, share: int) -> None:
    assert log_share(4096, jobs) == share


def _inputs(job_id: str, task: str, log: str = "") -> ReflectionInputs:
    return ReflectionInputs(
        request=ReflectRequest(
            original_job_id=job_id, user_id="alice", piece_name="default", outcome="succeeded"
        ),
        job=Job(
            id=job_id,
            user_id="alice",
            piece_name="default",
            status="succeeded",
            task=task,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        ),
        activity=ActivityLog(text=log, total_bytes=len(log), omitted_bytes=0),
        memory=(MemoryEntry(name="known", description="Known fact", type="project", body="Kept."),),
        piece=Piece(name="default", yaml="name: default\n", user_copy=False, path=Path("d.yaml")),
    )


TOKEN = "ghp_Zx8kQ2mN4pR7sT1vW3yB5dF6hJ9kL0aC2eG4"
LIMITS: dict[str, Any] = {
    "max_output_tokens": 2048,
    "max_changes": 8,
    "max_body_bytes": 8192,
    "memory_max_bytes": 6144,
    "log_max_bytes": 2048,
}


def test_a_batch_prompt_has_the_shared_part_once_and_each_jobs_blocks() -> None:
    leader = _inputs("j1", "First request")
    others = [
        _inputs("j2", "Second request >>> with a fake close", "[00:01] user: use token " + TOKEN),
        _inputs("j3", "Third request"),
    ]
    prompt = batch_prompt(leader, others, context_limit_tokens=32000, **LIMITS)
    alone = fit_prompt(leader, context_limit_tokens=32000, **LIMITS)
    assert prompt.system == alone.system
    # The same stable prefix as the leader's prompt alone, then the leader's job, then
    # the others, then the note, then the instruction that closes every prompt.
    prefix = alone.user[: alone.user.index("# The job")]
    assert prompt.user.startswith(prefix + "# The job")
    order = ["First request", "Second request", "Third request", "One answer for 3 jobs"]
    at = [prompt.user.index(text) for text in order]
    assert at == sorted(at) and prompt.user.endswith(alone.user[alone.user.rindex("\n\n") :])
    for text in ("First request", "Second request", "Third request"):
        assert prompt.user.count(text) == 1
    assert prompt.user.count("<<<PIECE") == 1 and prompt.user.count("<<<MEMORY_ENTRY") == 1
    assert "<<<REQUEST job=j2" in prompt.user and "<<<ACTIVITY_LOG job=j2" in prompt.user
    assert "> > > with a fake close" in prompt.user  # data cannot close its block
    assert (
        TOKEN not in prompt.user and "[REDACTED:GitHub Token]" in prompt.user
    )  # credentials masked
    assert "One answer for 3 jobs" in prompt.user and "j1, j2, j3" in prompt.user


def test_a_batch_that_cannot_fit_overflows() -> None:
    others = [_inputs(f"j{i}", "word " * 3000) for i in range(2, 6)]
    with pytest.raises(ContextOverflowError):
        batch_prompt(_inputs("j1", "First"), others, context_limit_tokens=4000, **LIMITS)


def test_a_batch_prompt_keeps_each_jobs_text_as_shown() -> None:
    log = "[00:01] user: use token " + TOKEN
    prompt = batch_prompt(
        _inputs("j1", "First request"),
        [_inputs("j2", "Second request", log), _inputs("j3", "Third request")],
        context_limit_tokens=32000,
        **LIMITS,
    )
    assert prompt.shown is not None and prompt.shown.request == "First request"
    assert {k: v.request for k, v in prompt.others_shown.items()} == {
        "j2": "Second request",
        "j3": "Third request",
    }
    shown_log = prompt.others_shown["j2"].log_head
    assert TOKEN not in shown_log and "[REDACTED:GitHub Token]" in shown_log
    assert shown_log in prompt.user  # the text its quotes are judged against is the shown one


def _quoting(job_id: str | None, quote: str) -> MemoryChange:
    return MemoryChange(
        op="add",
        name="project-fact",
        type="project",
        description="A fact about the project",
        body="The project keeps this fact.",
        evidence=[quote],
        job_id=job_id,
    )


# the change's job_id, the job whose text it quotes -> the code it is judged
QUOTES: list[tuple[str | None, str, Code]] = [
    ("j1", "j1", Code.OK),  # the leader's own job
    ("j2", "j2", Code.OK),  # a follower's own job
    ("j3", "j3", Code.OK),
    ("j1", "j2", Code.UNSUPPORTED),  # another job of the batch
    ("j2", "j3", Code.UNSUPPORTED),
    ("j3", "j1", Code.UNSUPPORTED),
    ("zz", "j2", Code.UNSUPPORTED),  # a job not in the batch
    (None, "j1", Code.UNSUPPORTED),  # no job named, in a batch of several
]


@pytest.mark.parametrize(("job_id", "quoted", "code"), QUOTES)
def test_a_batch_change_may_only_quote_its_own_job(
    job_id: str | None, quoted: str, code: Code
) -> None:
    texts = {
        "j1": "Rename the billing module to invoices",
        "j2": "Pin the Postgres image to version 16",
        "j3": "Move the docs build to mkdocs",
    }
    leader = _inputs("j1", texts["j1"])
    others = [_inputs("j2", texts["j2"]), _inputs("j3", texts["j3"])]
    prompt = batch_prompt(leader, others, context_limit_tokens=32000, **LIMITS)
    result = LlmResult(
        decision=LlmDecision(reasoning="r", memory_changes=[_quoting(job_id, texts[quoted])]),
        raw="{}",
        model="m",
        usage=Usage(),
    )
    stored = stored_decision(result, leader.request, prompt)
    assert set(stored.shown or {}) == {"j1", "j2", "j3"}
    found = judge_memory_changes(
        stored.result.decision.memory_changes, {}, Limits(), grounds=stored.grounds
    )
    assert [v.code for v in found.verdicts] == [code]
