"""Consolidation passes on the real Postgres and Redis, with the scripted LLM over HTTP:
applied once, reverted, refused with codes, dry-run writing nothing, one pass per user at
a time, and the threshold trigger and sweep choosing the users due (SPEC §11, §14)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from reflection import storage
from reflection.consolidate import (
    MARKER_PREFIX,
    QUEUED_PREFIX,
    dry_run_consolidation,
    maybe_trigger,
    run_consolidation,
    sweep,
    threshold_due,
)
from reflection.lock import user_lock
from reflection.models import Outcome
from reflection.records import EntryChanges, EntryRecord
from reflection.revert import revert_snapshot
from reflection.snapshot import read_meta
from reflection.storage import memory_entries, reflection_claims, reflection_metrics
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import index_lines, write_entry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=120)  # past the 90 stale days
PROMPT = "Consolidate this user's memory."


def seed(env: Env, names: list[str], at: datetime) -> None:
    """Alice's entries on disk, with records made at `at` (as a run found them then)."""
    for name in names:
        write_entry(env, name, body=f"Body of {name}.")
    with env.engine.begin() as conn:
        storage.write_entries(
            conn,
            EntryChanges(user_id="alice", job="seed", at=at, found=dict.fromkeys(names, "project")),
        )


def script(env: Env, *replies: dict[str, Any]) -> None:
    env.llm.set_script({"rules": [{"match": PROMPT, "replies": list(replies)}]})


def reply(*changes: dict[str, Any]) -> dict[str, Any]:
    return {"content": decision("tidy", list(changes))}


UPDATE_KEPT = {
    "op": "update",
    "name": "prefers-pytest",
    "description": "Wants tests written with pytest, never unittest",
    "type": "feedback",
    "body": "Use pytest fixtures; never unittest.",
}
MERGE = {"op": "remove", "name": "use-pytest", "merge_target": "prefers-pytest"}
RETIRE = {"op": "remove", "name": "old-ci", "reason": "the CI moved to GitHub Actions"}


def records(env: Env) -> dict[str, EntryRecord]:
    found = storage.entry_records(engine=env.engine, user_id="alice", include_removed=True)
    return {r.name: r for r in found}


def pass_(env: Env, now: datetime = LATER, pass_id: str | None = None, **kw: Any) -> Any:
    return run_consolidation(
        env.deps, user_id="alice", reason=kw.pop("reason", "operator"), now=now, pass_id=pass_id
    )


def memory_files(env: Env) -> dict[str, str]:
    mem = env.user().memory_dir
    return {p.name: p.read_text() for p in sorted(mem.glob("*.md"))} if mem.exists() else {}


def counts(env: Env) -> tuple[int, int, int]:
    with env.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (reflection_metrics, reflection_claims, memory_entries)
        )


def test_a_pass_merges_retires_and_sharpens_once(env: Env) -> None:
    """A merge, a stale removal and an update land as files, MEMORY.md, a snapshot with
    `kind: consolidation`, an index line, one metrics row keyed by the claim, the claim
    done and the entry records; a second delivery of the pass is a duplicate."""
    seed(env, ["prefers-pytest", "use-pytest", "old-ci", "billing-db"], T0)
    script(env, reply(UPDATE_KEPT, MERGE, RETIRE))
    report = pass_(env, pass_id="pass-1", reason="threshold")
    assert report.outcome is Outcome.APPLIED, report
    assert [v.code.value for v in report.verdicts] == ["ok", "ok", "ok"]

    assert sorted(memory_files(env)) == ["MEMORY.md", "billing-db.md", "prefers-pytest.md"]
    assert "never unittest" in memory_files(env)["MEMORY.md"]
    [line] = index_lines(env)
    assert (line["kind"], line["original_job_id"], line["reflection_job_id"]) == (
        "consolidation",
        "consolidate:alice:pass-1",
        "pass-1",
    )
    meta = read_meta(env.user(), line["snapshot_id"])
    assert (meta.kind, meta.reason, meta.piece_name) == ("consolidation", "threshold", None)  # type: ignore[union-attr]
    snap = env.user().snapshot_dir(line["snapshot_id"])
    assert (snap / "before" / "use-pytest.md").exists() and (
        snap / "after" / "prefers-pytest.md"
    ).exists()

    [row] = env.metrics()
    assert (row["kind"], row["original_job_id"], row["piece_name"], row["outcome"]) == (
        "consolidation",
        "consolidate:alice:pass-1",
        "",
        "applied",
    )
    assert (row["memory_changes"], row["snapshot_id"]) == (3, line["snapshot_id"])
    assert (
        storage.claim_state(engine=env.engine, original_job_id="consolidate:alice:pass-1") == "done"
    )

    rec = records(env)
    assert (rec["use-pytest"].removed_by, rec["use-pytest"].removed_reason) == (
        "pass-1",
        "merged into prefers-pytest",
    )
    assert rec["old-ci"].removed_reason == "stale: the CI moved to GitHub Actions"
    assert (rec["prefers-pytest"].updated_by_job, rec["prefers-pytest"].updated_at) == (
        "pass-1",
        LATER,
    )
    assert rec["billing-db"].live and rec["billing-db"].updated_at == T0
    assert storage.last_consolidation_at(engine=env.engine, user_id="alice") is not None

    calls = env.llm_calls()
    again = pass_(env, pass_id="pass-1")
    assert again.outcome is Outcome.DUPLICATE
    assert env.llm_calls() == calls
    assert len(index_lines(env)) == 1
    assert [r["outcome"] for r in env.metrics()] == ["applied"]


def test_the_prompt_holds_every_entry_with_its_record(env: Env) -> None:
    """Every entry goes to the LLM with its age, confirmations and last confirmation."""
    seed(env, ["billing-db", "old-ci"], T0)
    with env.engine.begin() as conn:
        storage.write_entries(
            conn,
            EntryChanges(
                user_id="alice", job="r", at=T0 + timedelta(days=100), confirmed=["billing-db"]
            ),
        )
    script(env, reply())
    assert pass_(env).outcome is Outcome.ABSTAINED
    [req] = [r for r in env.llm.requests if r["path"].endswith("/chat/completions")]
    user = req["json"]["messages"][-1]["content"]
    assert (
        "name=billing-db type=project age_days=120 confirmations=1 last_confirmed_days=20" in user
    )
    assert "name=old-ci type=project age_days=120 confirmations=0 last_confirmed_days=never" in user
    assert "Body of old-ci." in user
    system = req["json"]["messages"][0]["content"]
    assert "Only `update` and `remove`" in system


BAD = [
    (
        "an add",
        {"op": "add", "name": "new-fact", "description": "d", "type": "project", "body": "b"},
        "op_not_allowed",
    ),
    ("a protected removal", {"op": "remove", "name": "guard", "reason": "stale"}, "protected"),
    (
        "a missing merge target",
        {"op": "remove", "name": "billing-db", "merge_target": "ghost"},
        "merge_target_missing",
    ),
    ("a fresh removal", {"op": "remove", "name": "fresh", "reason": "looks old"}, "not_stale"),
    ("a removal without reason", {"op": "remove", "name": "billing-db"}, "not_stale"),
]


@pytest.mark.parametrize(("change", "code"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_answers_get_codes_and_change_nothing(
    env: Env, change: dict[str, Any], code: str
) -> None:
    """A bad consolidation answer is rejected with its code: no file changes, a
    snapshot and a `rejected` metrics row."""
    seed(env, ["billing-db", "other"], T0)
    write_entry(env, "guard", protected=True)
    seed(env, ["fresh"], LATER - timedelta(days=1))
    before = memory_files(env)
    script(env, reply(change))
    report = pass_(env)
    assert report.outcome is Outcome.REJECTED
    assert [v.code.value for v in report.verdicts] == [code]
    assert memory_files(env) == before
    [row] = env.metrics()
    assert (row["outcome"], row["kind"], row["rejections"]) == ("rejected", "consolidation", 1)


def test_an_answer_that_is_not_json_fails_with_a_code(env: Env) -> None:
    """Not JSON even after the repair round: `failed` with `llm_invalid_output`, a
    metrics row of kind consolidation, the claim failed; nothing written."""
    seed(env, ["billing-db"], T0)
    before = memory_files(env)
    script(env, {"content": "I think you should keep everything."})
    report = pass_(env, pass_id="pass-bad")
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "llm_invalid_output")
    [row] = env.metrics()
    assert (row["kind"], row["outcome"], row["error_code"], row["original_job_id"]) == (
        "consolidation",
        "failed",
        "llm_invalid_output",
        "consolidate:alice:pass-bad",
    )
    assert (
        storage.claim_state(engine=env.engine, original_job_id="consolidate:alice:pass-bad")
        == "failed"
    )
    assert memory_files(env) == before and index_lines(env) == []


def test_a_pass_dropping_below_half_is_refused_whole(env: Env) -> None:
    """Three stale removals of four entries: every change too_many_removals."""
    seed(env, ["a1", "a2", "a3", "a4"], T0)
    before = memory_files(env)
    stale = [{"op": "remove", "name": f"a{i}", "reason": "stale"} for i in (1, 2, 3)]
    script(env, reply({**UPDATE_KEPT, "name": "a4"}, *stale))
    report = pass_(env)
    assert report.outcome is Outcome.REJECTED
    assert {v.code.value for v in report.verdicts} == {"too_many_removals"}
    assert memory_files(env) == before


def test_revert_of_a_pass_restores_entries_and_their_records(env: Env) -> None:
    """Reverting a consolidation brings the removed entries back (records live again)
    and the updated one's text; the revert is its own row."""
    seed(env, ["prefers-pytest", "use-pytest", "old-ci", "billing-db"], T0)
    before = memory_files(env)
    script(env, reply(UPDATE_KEPT, MERGE, RETIRE))
    assert pass_(env, pass_id="pass-rv").outcome is Outcome.APPLIED
    [line] = index_lines(env)
    with user_lock(env.deps.redis, "alice", expire=30, wait=1) as lock:
        revert_snapshot(
            paths=env.user(),
            snapshot_id=line["snapshot_id"],
            lock=lock,
            engine=env.engine,
            now=LATER,
        )
    after = memory_files(env)
    assert {k: v for k, v in after.items() if k != "MEMORY.md"} == {
        k: v for k, v in before.items() if k != "MEMORY.md"
    }
    rec = records(env)
    assert rec["use-pytest"].live and rec["old-ci"].live
    assert rec["use-pytest"].updated_by_job.startswith("revert-")  # type: ignore[union-attr]
    assert [(r["kind"], r["outcome"]) for r in env.metrics()] == [
        ("consolidation", "applied"),
        ("revert", "reverted"),
    ]


def test_one_pass_per_user_at_a_time(env: Env, redis_client: Any) -> None:
    """While another pass holds the user's marker, a pass ends `duplicate` without
    asking the LLM; once the marker is gone, a pass runs."""
    seed(env, ["billing-db"], T0)
    script(env, reply())
    redis_client.set(MARKER_PREFIX + "alice", "other-pass", ex=60)
    report = pass_(env, pass_id="second")
    assert report.outcome is Outcome.DUPLICATE and env.llm_calls() == 0
    [row] = env.metrics()
    assert (row["kind"], row["outcome"]) == ("consolidation", "duplicate")
    assert redis_client.get(MARKER_PREFIX + "alice") == b"other-pass"  # not ours to drop
    redis_client.delete(MARKER_PREFIX + "alice")
    assert pass_(env, pass_id="third").outcome is Outcome.ABSTAINED
    assert redis_client.get(MARKER_PREFIX + "alice") is None


def test_dry_run_writes_nothing(env: Env, redis_client: Any) -> None:
    """A dry run asks and judges; no file, snapshot, row, claim, record or marker."""
    seed(env, ["prefers-pytest", "use-pytest", "old-ci", "billing-db"], T0)
    before_files, before_rows = memory_files(env), counts(env)
    script(env, reply(UPDATE_KEPT, MERGE, RETIRE))
    dry = dry_run_consolidation(env.deps, user_id="alice", now=LATER)
    assert [v.code.value for v in dry.journal.meta.verdicts] == ["ok", "ok", "ok"]  # type: ignore[union-attr]
    assert {Path(f.path).name for f in dry.journal.files} >= {"use-pytest.md", "MEMORY.md"}
    assert memory_files(env) == before_files
    assert counts(env) == before_rows
    assert not env.user().snapshot_index.exists()
    assert not (env.user().home / "reflections").exists()
    assert redis_client.keys("reflection:consolidat*") == []


def test_threshold_trigger_publishes_once(env: Env, redis_client: Any) -> None:
    """At `consolidate_at_entries` live entries with no recent pass, one pass is
    published (and not again while it is queued); below it, or after a recent pass,
    none."""
    env.settings(consolidate_at_entries=3, consolidate_min_interval_hours=24)
    published: list[tuple[str, str]] = []

    def publish(user: str, reason: str) -> None:
        published.append((user, reason))

    seed(env, ["a1", "a2"], T0)
    assert not maybe_trigger(env.deps, "alice", publish)
    seed(env, ["a3"], T0)
    assert maybe_trigger(env.deps, "alice", publish)
    assert not maybe_trigger(env.deps, "alice", publish)  # queued already
    assert published == [("alice", "threshold")]

    script(env, reply())
    assert pass_(env, now=datetime.now(UTC)).outcome is Outcome.ABSTAINED
    assert redis_client.get(QUEUED_PREFIX + "alice") is None  # the pass ended
    assert not threshold_due(env.deps, "alice")  # a pass within the interval
    env.settings(consolidate_at_entries=3, consolidate_min_interval_hours=0)
    assert threshold_due(env.deps, "alice")


def test_sweep_publishes_for_users_reflected_since_their_last_pass(env: Env, make_job: Any) -> None:
    """Users with a reflection after their last pass (or none yet) are due; a user whose
    pass came after their last reflection is not."""
    for uid in ("alice", "bob"):
        job = f"job-{uid}"
        make_job(job, user_id=uid)
        env.script(job, {"content": decision()})
        assert env.run(job, user_id=uid).outcome is Outcome.ABSTAINED
    published: list[tuple[str, str]] = []
    assert sweep(env.deps, lambda u, r: published.append((u, r))) == ["alice", "bob"]
    assert published == [("alice", "scheduled"), ("bob", "scheduled")]
    script(env, reply())
    assert (
        run_consolidation(env.deps, user_id="bob", reason="scheduled").outcome is Outcome.ABSTAINED
    )
    assert sweep(env.deps, lambda u, r: None) == ["alice"]


def test_bad_kwargs_fail_with_a_row(env: Env) -> None:
    for kw in ({"user_id": "../x"}, {"user_id": "alice", "reason": "because"}, {"user_id": "*"}):
        pid = str(uuid.uuid4())
        report = run_consolidation(env.deps, pass_id=pid, **kw)  # type: ignore[arg-type]
        assert (report.outcome, report.error_code) == (Outcome.FAILED, "bad_request")
    assert [(r["kind"], r["error_code"]) for r in env.metrics()] == [
        ("consolidation", "bad_request")
    ] * 3
    assert json.dumps(env.metrics(), default=str).count('"piece_name": ""') == 3


def test_a_pass_stopped_after_its_journal_is_finished_once_by_its_redelivery(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug stops a pass right after its journal (the task records it `failed`); its
    redelivery rolls the journal forward without asking the LLM again: the files, one
    index line and one row (the failed one corrected to `applied`), the claim done."""
    import reflection.apply as apply_mod

    seed(env, ["prefers-pytest", "use-pytest", "billing-db"], T0)
    script(env, reply(UPDATE_KEPT, MERGE))
    real = apply_mod.fault_point  # type: ignore[attr-defined]

    def stop(name: str) -> None:
        if name == "after_journal":
            raise RuntimeError("a bug")

    monkeypatch.setattr(apply_mod, "fault_point", stop)
    with pytest.raises(RuntimeError):
        pass_(env, pass_id="pass-k")
    from reflection.consolidate import record_pass_failure
    from reflection.errors import InternalError

    record_pass_failure(env.deps, pass_id="pass-k", user_id="alice", error=InternalError("bug"))
    monkeypatch.setattr(apply_mod, "fault_point", real)
    assert [r["outcome"] for r in env.metrics()] == ["failed"]
    calls = env.llm_calls()

    assert pass_(env, pass_id="pass-k").outcome is Outcome.APPLIED
    assert env.llm_calls() == calls
    assert "use-pytest.md" not in memory_files(env)
    assert len(index_lines(env)) == 1
    assert [(r["kind"], r["outcome"]) for r in env.metrics()] == [("consolidation", "applied")]
    assert pass_(env, pass_id="pass-k").outcome is Outcome.DUPLICATE
    assert len(index_lines(env)) == 1


def test_a_pass_keeps_its_answer_masked_on_the_claim_and_judges_the_raw_secret(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer kept on the pass's claim is masked (SPEC §14): a key in an update's body
    never reaches Postgres, and the retry that reuses the stored answer still refuses the
    change `secret_detected` from the verdict computed on the raw text."""
    import reflection.consolidate as consolidate_mod

    key = "ghp_" + "Zq8" * 12
    seed(env, ["prefers-pytest", "billing-db"], T0)
    leaky = {**UPDATE_KEPT, "body": f"Use pytest. The CI token is {key}"}
    script(env, reply(leaky, {**UPDATE_KEPT, "name": "billing-db"}))

    def boom(**_: Any) -> Any:
        raise RuntimeError("stopped after the answer was stored")

    real = consolidate_mod.plan_pass
    monkeypatch.setattr(consolidate_mod, "plan_pass", boom)
    with pytest.raises(RuntimeError):
        pass_(env, pass_id="pass-s")
    monkeypatch.setattr(consolidate_mod, "plan_pass", real)
    with env.engine.connect() as conn:
        kept = conn.execute(select(reflection_claims.c.decision)).scalar_one()
    assert kept is not None and key not in kept and "schema_version" in kept

    calls = env.llm_calls()
    report = pass_(env, pass_id="pass-s")
    assert env.llm_calls() == calls  # the stored answer, not a second call
    codes = {v.name: v.code.value for v in report.verdicts}
    assert codes == {"prefers-pytest": "secret_detected", "billing-db": "ok"}
    assert key not in json.dumps(memory_files(env))
    with env.engine.connect() as conn:
        assert conn.execute(select(reflection_claims.c.decision)).scalar_one() is None
