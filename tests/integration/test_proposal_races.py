"""Review mode's approve/reject against what else happens to the piece: a base that
changed, a concurrent reject, an identical second proposal, a killed approval."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import reflection.proposals as P
from reflection import storage
from reflection.errors import LockBusyError, ProposalError, ProposalRefusedError
from reflection.proposals import (
    Approval,
    approve_proposal,
    get_proposal,
    list_proposals,
    reject_proposal,
)
from reflection.records import ProposalSummary
from reflection.snapshot import iter_index
from tests.cli.helpers import BUILTIN, rows, tuned_piece
from tests.integration.conftest import Env, decision

pytestmark = pytest.mark.integration


class Killed(Exception):
    """Stands for the process dying at that point (its lock then expires)."""


def _stage(env: Env, make_job: Any, job_id: str, marker: str = "(tuned)") -> ProposalSummary:
    """Run `job_id` in review mode proposing `marker`; its proposal."""
    make_job(job_id)
    env.script(job_id, {"content": decision("tune", piece_edit=tuned_piece(marker))})
    assert env.run(job_id).outcome.value == "applied"
    [prop] = [p for p in list_proposals(engine=env.engine) if p.original_job_id == job_id]
    return prop


def _approve(env: Env, prop: ProposalSummary) -> Approval:
    return approve_proposal(
        settings=env.deps.settings,
        engine=env.engine,
        redis_client=env.deps.redis,
        proposal_id=prop.id,
        now=datetime.now(UTC),
    )


def _reject(env: Env, prop: ProposalSummary) -> None:
    reject_proposal(
        settings=env.deps.settings,
        engine=env.engine,
        redis_client=env.deps.redis,
        proposal_id=prop.id,
        reason="no",
        now=datetime.now(UTC),
    )


def _status(env: Env, prop: ProposalSummary) -> str:
    return str(get_proposal(engine=env.engine, proposal_id=prop.id).status)


def _approval_snapshots(env: Env) -> list[str]:
    return [str(i.snapshot_id) for i in iter_index(env.user()) if i.kind == "approval"]


def _journals(env: Env) -> list[str]:
    folder = env.user().journal_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def review(env: Env) -> Env:
    env.settings(piece_edit_mode="review", piece_edit_cooldown_hours=0)
    return env


# 1. the piece changed since the proposal was made


def test_approve_refuses_a_proposal_made_against_an_older_piece(review: Env, make_job: Any) -> None:
    """Two runs propose against the built-in; once the first is approved, the second
    would overwrite it wholesale: refused `piece_stale`, left pending, nothing written."""
    first = _stage(review, make_job, "job-s1", "(one)")
    second = _stage(review, make_job, "job-s2", "(two)")
    assert first.before_sha256 == second.before_sha256
    _approve(review, first)
    copy = review.user().piece_copy("default")
    assert "(one)" in copy.read_text()

    with pytest.raises(ProposalRefusedError) as refused:
        _approve(review, second)
    assert refused.value.verdict.code.value == "piece_stale"
    assert "changed since this proposal was made" in str(refused.value)
    assert "(one)" in copy.read_text() and "(two)" not in copy.read_text()
    assert _status(review, second) == "pending"
    assert get_proposal(engine=review.engine, proposal_id=second.id).detail.startswith(  # type: ignore[union-attr]
        "piece_stale: "
    )
    assert len(rows(review.engine, storage.piece_edits)) == 1
    assert len(_approval_snapshots(review)) == 1
    _reject(review, second)  # what the refusal advises
    assert _status(review, second) == "rejected"


def test_approve_refuses_after_a_hand_edit_of_the_piece(review: Env, make_job: Any) -> None:
    """An edit by hand since the proposal (no piece_edits row, so no cooldown) is not
    silently undone either."""
    prop = _stage(review, make_job, "job-h")
    copy = review.user().piece_copy("default")
    copy.parent.mkdir(parents=True, exist_ok=True)
    by_hand = BUILTIN.read_text().replace("description:", "description: (by hand)", 1)
    copy.write_text(by_hand)
    with pytest.raises(ProposalRefusedError) as refused:
        _approve(review, prop)
    assert refused.value.verdict.code.value == "piece_stale"
    assert copy.read_text() == by_hand
    assert rows(review.engine, storage.piece_edits) == []


# 2. reject racing approve


def test_reject_cannot_land_between_an_approvals_write_and_its_record(
    review: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approval holds the user lock from its check to its record: a reject meanwhile
    waits for it (here: gives up busy) and then finds the proposal approved."""
    review.settings(lock_wait_seconds=0)
    prop = _stage(review, make_job, "job-race")
    real = P.roll_forward  # type: ignore[attr-defined]
    attempts: list[BaseException | None] = []

    def written_then_rejected(**kw: Any) -> bool:
        done = real(**kw)
        try:  # an operator runs `reflection reject` while the copy is written
            _reject(review, prop)
            attempts.append(None)
        except (LockBusyError, ProposalError) as e:
            attempts.append(e)
        return done

    monkeypatch.setattr(P, "roll_forward", written_then_rejected)
    _approve(review, prop)
    [attempt] = attempts
    assert isinstance(attempt, LockBusyError)
    assert _status(review, prop) == "approved"
    assert "(tuned)" in review.user().piece_copy("default").read_text()
    assert len(rows(review.engine, storage.piece_edits)) == 1
    with pytest.raises(ProposalError, match="already approved"):
        _reject(review, prop)


@pytest.mark.parametrize("killed_at", ["after_journal", "after_snapshot"])
def test_reject_refuses_a_proposal_whose_approval_was_interrupted(
    review: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch, killed_at: str
) -> None:
    """An approval killed after its journal (the copy will be written) or after its
    snapshot (the copy is written, the rows are not) cannot then be rejected — the piece
    would be changed with the proposal `rejected` and no cooldown; `approve` completes it
    exactly once."""
    prop = _stage(review, make_job, "job-k")

    def killed(*args: Any, **kw: Any) -> None:
        raise Killed

    monkeypatch.setattr(P, "roll_forward" if killed_at == "after_journal" else "_record", killed)
    with pytest.raises(Killed):
        _approve(review, prop)
    monkeypatch.undo()
    assert _status(review, prop) == "pending"

    with pytest.raises(ProposalError, match="interrupted approval"):
        _reject(review, prop)
    assert _status(review, prop) == "pending"

    done = _approve(review, prop)
    assert done.verdict.detail == "completed an interrupted approval"
    assert _status(review, prop) == "approved"
    [edit] = rows(review.engine, storage.piece_edits)
    assert edit["before_sha256"] == prop.before_sha256
    assert edit["after_sha256"] == prop.after_sha256
    assert _approval_snapshots(review) == [done.snapshot_dir.name]
    assert _journals(review) == []
    assert "(tuned)" in review.user().piece_copy("default").read_text()


def test_reject_still_works_once_an_interrupted_approval_was_reverted(
    review: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal is about the proposal being in effect: an operator who reverted the
    interrupted approval's snapshot can reject the proposal."""
    from reflection.lock import user_lock
    from reflection.revert import revert_snapshot

    prop = _stage(review, make_job, "job-rv")
    monkeypatch.setattr(P, "_record", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        _approve(review, prop)
    monkeypatch.undo()
    [sid] = _approval_snapshots(review)
    s = review.deps.settings
    with user_lock(
        review.deps.redis, "alice", expire=s.lock_expire_seconds, wait=s.lock_wait_seconds
    ) as lock:
        revert_snapshot(
            paths=review.user(),
            snapshot_id=sid,
            lock=lock,
            engine=review.engine,
            now=datetime.now(UTC),
        )
    assert not review.user().piece_copy("default").exists()
    _reject(review, prop)
    assert _status(review, prop) == "rejected"
    assert rows(review.engine, storage.piece_edits) == []


# 3. a proposal equal to the current copy is not an interrupted approval


@pytest.mark.parametrize(("cooldown", "code"), [(24, "piece_cooldown"), (0, "piece_unchanged")])
def test_an_identical_second_proposal_is_judged(
    review: Env, make_job: Any, cooldown: int, code: str
) -> None:
    """Two runs propose the same edit; once the first is approved the copy equals the
    second, which is still judged (cooldown, then unchanged), not 'completed'."""
    review.settings(piece_edit_cooldown_hours=cooldown)
    first = _stage(review, make_job, "job-i1")
    second = _stage(review, make_job, "job-i2")
    assert first.after_sha256 == second.after_sha256
    _approve(review, first)
    with pytest.raises(ProposalRefusedError) as refused:
        _approve(review, second)
    assert refused.value.verdict.code.value == code
    assert _status(review, second) == "pending"
    assert len(rows(review.engine, storage.piece_edits)) == 1
    assert len(_approval_snapshots(review)) == 1


# 4. a killed writer's journal is completed before the approval plans


def test_approve_completes_its_own_killed_journal_once(
    review: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An approval killed right after its journal: the next approve rolls that journal
    forward first and completes it — not a second write, snapshot and journal left over."""
    prop = _stage(review, make_job, "job-j")
    monkeypatch.setattr(P, "roll_forward", lambda **kw: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        _approve(review, prop)
    monkeypatch.undo()
    assert len(_journals(review)) == 1
    assert not review.user().piece_copy("default").exists()

    done = _approve(review, prop)
    assert done.verdict.detail == "completed an interrupted approval"
    assert _journals(review) == []
    assert _approval_snapshots(review) == [done.snapshot_dir.name]
    assert len(rows(review.engine, storage.piece_edits)) == 1
    approvals = [r for r in review.metrics() if r["kind"] == "approval"]
    assert [r["snapshot_id"] for r in approvals] == [done.snapshot_dir.name]


def test_approve_plans_on_the_piece_a_killed_journal_writes(
    review: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another proposal's approval was killed after its journal: the copy is (one) as
    far as the journal goes. Approving a second proposal made against the built-in must
    see (one) — refused stale — not write (two) and leave (one)'s journal to claim later
    that it applied."""
    first = _stage(review, make_job, "job-a1", "(one)")
    second = _stage(review, make_job, "job-a2", "(two)")
    monkeypatch.setattr(P, "roll_forward", lambda **kw: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        _approve(review, first)
    monkeypatch.undo()

    with pytest.raises(ProposalRefusedError) as refused:
        _approve(review, second)
    assert refused.value.verdict.code.value == "piece_stale"
    assert _journals(review) == []
    copy = review.user().piece_copy("default")
    assert "(one)" in copy.read_text()
    assert _approve(review, first).verdict.detail == "completed an interrupted approval"
    assert "(one)" in copy.read_text()
    assert len(rows(review.engine, storage.piece_edits)) == 1
