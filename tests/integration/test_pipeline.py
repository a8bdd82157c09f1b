"""The whole pipeline in-process: real Postgres, Redis, files, and the openai SDK over HTTP."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from reflection.devtools.scripted_llm import _Handler
from reflection.errors import LockBusyError
from reflection.lock import user_lock
from reflection.models import Code, Outcome
from reflection.pieces import canonical_text
from reflection.turns import Turns
from tests.integration.conftest import Env, decision
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

PYTEST_ENTRY: dict[str, Any] = {
    "op": "add",
    "evidence": EVIDENCE,
    "name": "prefers-pytest",
    "description": "Wants tests written with pytest, never unittest",
    "type": "feedback",
    "body": "The user rejected a unittest suite; use pytest fixtures.",
}


def write_entry(env: Env, name: str, body: str = "b", protected: bool = False) -> None:
    mem = env.user().memory_dir
    mem.mkdir(parents=True, exist_ok=True)
    extra = "protected: true\n" if protected else ""
    (mem / f"{name}.md").write_text(
        f"---\nname: {name}\ndescription: d {name}\ntype: project\n{extra}---\n{body}"
    )


def index_lines(env: Env, uid: str = "alice") -> list[dict[str, Any]]:
    path = env.user(uid).snapshot_index
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_applied_run_writes_memory_index_snapshot_and_metrics(env: Env, make_job: Any) -> None:
    """An accepted add lands as a file, in MEMORY.md, in a snapshot, and in one metrics row."""
    make_job("job-a1")
    env.script("job-a1", {"content": decision("user corrected us", [PYTEST_ENTRY])})
    report = env.run("job-a1")
    assert report.outcome is Outcome.APPLIED
    u = env.user()
    text = u.memory_file("prefers-pytest").read_text()
    assert text.startswith("---\n") and "type: feedback" in text
    assert "prefers-pytest" in u.memory_index.read_text()
    assert report.snapshot_dir is not None
    meta = json.loads((report.snapshot_dir / "meta.json").read_text())
    assert meta["outcome"] == "applied" and meta["reasoning"] == "user corrected us"
    assert (report.snapshot_dir / "after" / "prefers-pytest.md").read_text() == text
    assert not (report.snapshot_dir / "before" / "prefers-pytest.md").exists()
    assert "llm_raw" not in meta
    [line] = index_lines(env)
    assert line["snapshot_id"] == meta["snapshot_id"] and line["outcome"] == "applied"
    [row] = env.metrics()
    assert row["outcome"] == "applied" and row["memory_changes"] == 1
    assert row["tokens_in"] > 0 and row["tokens_out"] > 0 and row["model"] == "scripted-1"
    assert not u.journal_dir.exists() or not list(u.journal_dir.iterdir())


def test_second_publish_is_a_duplicate_without_an_llm_call(env: Env, make_job: Any) -> None:
    """One reflection per original job: the second returns duplicate and calls no LLM."""
    make_job("job-d1")
    env.script("job-d1", {"content": decision("x", [PYTEST_ENTRY])})
    assert env.run("job-d1").outcome is Outcome.APPLIED
    calls = env.llm_calls()
    assert env.run("job-d1").outcome is Outcome.DUPLICATE
    assert env.llm_calls() == calls
    assert [r["outcome"] for r in env.metrics()] == ["applied", "duplicate"]
    assert len(index_lines(env)) == 1


def test_abstained_run_still_gets_a_snapshot(env: Env, make_job: Any) -> None:
    """Nothing proposed: outcome abstained, a snapshot and an index line all the same."""
    make_job("job-ab")
    env.script("job-ab", {"content": decision("routine success")})
    report = env.run("job-ab")
    assert report.outcome is Outcome.ABSTAINED
    assert report.snapshot_dir is not None and (report.snapshot_dir / "meta.json").exists()
    assert [line["outcome"] for line in index_lines(env)] == ["abstained"]


def test_rejected_run_records_codes(env: Env, make_job: Any) -> None:
    """Only invalid proposals: outcome rejected, each code in the snapshot, no files."""
    make_job("job-rj")
    write_entry(env, "safety", protected=True)
    bad = [
        {**PYTEST_ENTRY, "name": "../../escape"},
        {**PYTEST_ENTRY, "name": "leak", "body": "aws AKIAIOSFODNN7EXAMPLE"},
        {"op": "remove", "name": "safety"},
    ]
    env.script("job-rj", {"content": decision("bad ideas", bad)})
    report = env.run("job-rj")
    assert report.outcome is Outcome.REJECTED
    assert [d.code for d in report.verdicts] == [
        Code.INVALID_NAME,
        Code.SECRET_DETECTED,
        Code.PROTECTED,
    ]
    assert env.user().memory_file("safety").exists()
    assert not env.user().memory_file("leak").exists()
    assert not (env.root / "escape.md").exists()
    assert env.metrics()[0]["rejections"] == 3


def test_update_snapshot_has_before_and_after(env: Env, make_job: Any) -> None:
    """An update keeps the old file as before/ and the new one as after/."""
    make_job("job-up")
    write_entry(env, "billing-db", body="Postgres 15.")
    change = {
        "op": "update",
        "evidence": EVIDENCE,
        "name": "billing-db",
        "description": "Billing DB",
        "type": "project",
        "body": "Postgres 16 since June.",
    }
    env.script("job-up", {"content": decision("db upgraded", [change])})
    report = env.run("job-up")
    assert report.snapshot_dir is not None
    assert "Postgres 15." in (report.snapshot_dir / "before" / "billing-db.md").read_text()
    assert "Postgres 16" in env.user().memory_file("billing-db").read_text()


def _piece_edit(env: Env, old: str, new: str) -> dict[str, str]:
    text = (env.deps.settings.pieces_dir / "default.yaml").read_text()
    assert old in text
    return {"yaml": text.replace(old, new, 1), "summary": "clarify"}


def test_piece_edit_writes_user_copy_row_and_cooldown(env: Env, make_job: Any) -> None:
    """An accepted piece edit writes the user's copy and a piece_edits row; a second is
    refused by the cooldown; the built-in is never modified."""
    builtin = env.deps.settings.pieces_dir / "default.yaml"
    original = builtin.read_text()
    first_line = next(line for line in original.splitlines() if "description:" in line)
    edit = _piece_edit(env, first_line, first_line + " (tuned)")
    make_job("job-p1")
    make_job("job-p2")
    env.script("job-p1", {"content": decision("tune", piece_edit=edit)})
    env.script(
        "job-p2",
        {
            "content": decision(
                "tune again", piece_edit=edit | {"yaml": edit["yaml"] + "\n# again\n"}
            )
        },
    )
    r1 = env.run("job-p1")
    assert r1.outcome is Outcome.APPLIED and r1.snapshot_dir is not None
    copy = env.user().piece_copy("default")
    # Written, snapshotted and hashed as canonical YAML (SPEC §14).
    assert copy.read_text() == canonical_text(edit["yaml"])
    assert (r1.snapshot_dir / "piece.before.yaml").read_text() == canonical_text(original)
    assert (r1.snapshot_dir / "piece.after.yaml").read_text() == canonical_text(edit["yaml"])
    assert builtin.read_text() == original
    r2 = env.run("job-p2")
    assert [d.code for d in r2.verdicts] == [Code.PIECE_COOLDOWN]
    assert r2.outcome is Outcome.REJECTED


@pytest.mark.parametrize(
    ("job_kw", "run_kw", "code"),
    [
        (None, {}, "job_not_found"),
        ({"user_id": "bob"}, {}, "input_mismatch"),
        ({"piece_name": "nosuchpiece"}, {"piece_name": "nosuchpiece"}, "piece_not_found"),
        ({}, {"user_id": "../etc"}, "bad_request"),
        ({}, {"outcome": "exploded"}, "bad_request"),
    ],
)
def test_permanent_failures_get_a_code_and_a_row(
    env: Env, make_job: Any, job_kw: dict[str, str] | None, run_kw: dict[str, str], code: str
) -> None:
    """Unknown job, mismatch, unknown piece, bad kwargs: failed, coded, one row, no LLM."""
    if job_kw is not None:
        make_job("job-f", **job_kw)
    report = env.run("job-f", **run_kw)
    assert (report.outcome, report.error_code) == (Outcome.FAILED, code)
    [row] = env.metrics()
    assert (row["outcome"], row["error_code"]) == ("failed", code)
    assert env.llm_calls() == 0


def test_llm_auth_failure(env: Env, make_job: Any) -> None:
    """A refused key fails at once with llm_auth and one request."""
    make_job("job-401")
    env.settings(llm_api_key="sk-wrong-key-0000000000000000")
    from reflection.llm import LlmClient

    env.deps.llm = LlmClient(env.deps.settings)
    report = env.run("job-401")
    assert report.error_code == "llm_auth"
    assert env.llm_calls() == 1


def test_invalid_output_twice_fails(env: Env, make_job: Any) -> None:
    """A reply that still does not validate after the repair round-trip: llm_invalid_output."""
    make_job("job-bad")
    env.script("job-bad", {"content": "I think the user likes pytest."})
    report = env.run("job-bad")
    assert report.error_code == "llm_invalid_output"
    assert env.llm_calls() == 2
    assert env.metrics()[0]["error_code"] == "llm_invalid_output"


def test_context_overflow_fails_before_any_call(env: Env, make_job: Any) -> None:
    """A prompt that cannot fit even trimmed fails context_overflow with no LLM call."""
    make_job("job-big", task="x" * 20000)
    env.settings(llm_context_limit_tokens=1000, llm_max_output_tokens=64)
    report = env.run("job-big")
    assert report.error_code == "context_overflow"
    assert env.llm_calls() == 0


def test_lock_busy_is_retryable_and_the_retry_reuses_the_decision(env: Env, make_job: Any) -> None:
    """With the user locked elsewhere the run raises LockBusyError; its retry applies the
    stored decision without asking the LLM again."""
    make_job("job-lk")
    env.script("job-lk", {"content": decision("x", [PYTEST_ENTRY])})
    with user_lock(env.deps.redis, "alice", expire=30, wait=0), pytest.raises(LockBusyError):
        env.run("job-lk", reflection_job_id="rid-lk")
    assert env.llm_calls() == 1
    assert env.metrics() == []
    report = env.run("job-lk", reflection_job_id="rid-lk")
    assert report.outcome is Outcome.APPLIED
    assert env.llm_calls() == 1


def test_malformed_memory_is_skipped_not_deleted(env: Env, make_job: Any) -> None:
    """A broken memory file neither crashes the run nor disappears."""
    make_job("job-mf")
    mem = env.user().memory_dir
    mem.mkdir(parents=True)
    (mem / "broken.md").write_text("no frontmatter at all")
    env.script("job-mf", {"content": decision("x", [PYTEST_ENTRY])})
    assert env.run("job-mf").outcome is Outcome.APPLIED
    assert (mem / "broken.md").read_text() == "no frontmatter at all"


def test_crash_after_journal_is_rolled_forward_once(
    env: Env, make_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the memory writes and the snapshot: the redelivery completes the run
    from the journal, with one index line, one metrics row and no second LLM call."""
    import reflection.apply as apply_mod

    make_job("job-cr")
    env.script("job-cr", {"content": decision("x", [PYTEST_ENTRY])})
    real = apply_mod.write_snapshot  # type: ignore[attr-defined]

    def crash(*a: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt("simulated SIGKILL")

    monkeypatch.setattr(apply_mod, "write_snapshot", crash)
    with pytest.raises(KeyboardInterrupt):
        env.run("job-cr", reflection_job_id="rid-cr")
    assert env.user().memory_file("prefers-pytest").exists()
    assert env.metrics() == []
    monkeypatch.setattr(apply_mod, "write_snapshot", real)
    report = env.run("job-cr", reflection_job_id="rid-cr")
    assert report.outcome is Outcome.APPLIED
    assert env.llm_calls() == 1
    assert len(index_lines(env)) == 1
    assert [r["outcome"] for r in env.metrics()] == ["applied"]


def test_users_are_isolated(env: Env, make_job: Any) -> None:
    """A reflection for bob never touches alice's folder."""
    make_job("job-bob", user_id="bob")
    env.script("job-bob", {"content": decision("x", [PYTEST_ENTRY])})
    assert env.run("job-bob", user_id="bob").outcome is Outcome.APPLIED
    assert env.user("bob").memory_file("prefers-pytest").exists()
    assert not env.user("alice").home.exists()


def test_runs_wait_on_the_llm_without_a_cpu_turn(
    env: Env, make_job: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a single CPU turn, six runs still wait on the LLM all at once (each gives its
    turn back for the LLM stage), queue for the rest of their work, and are all applied."""
    n = 6
    env.deps.turns = turns = Turns(1)
    together = threading.Barrier(n, timeout=10)
    answer = _Handler._chat

    def all_at_once(handler: _Handler, body: Any) -> None:
        together.wait()  # broken (the runs fail) unless all n requests are in at once
        answer(handler, body)

    monkeypatch.setattr(_Handler, "_chat", all_at_once)
    for i in range(n):
        make_job(f"job-t{i}", user_id=f"u{i}")
        env.script(f"job-t{i}", {"content": decision("x", [PYTEST_ENTRY])})
    with caplog.at_level(logging.INFO, logger="reflection"), ThreadPoolExecutor(n) as pool:
        reports = list(pool.map(lambda i: env.run(f"job-t{i}", user_id=f"u{i}"), range(n)))
    assert [r.outcome for r in reports] == [Outcome.APPLIED] * n
    assert (turns.free, turns.queued, turns.overflows) == (1, 0, 0)
    done = [m for r in caplog.records if (m := r.getMessage()).startswith("done ")]
    assert len(done) == n and any("queued:" in line for line in done)


def test_a_memory_index_edited_into_another_encoding_is_rewritten(env: Env, make_job: Any) -> None:
    """MEMORY.md is ours to rewrite: a hand-edited Latin-1 copy is replaced whole, not a
    reason to fail every run that changes memory."""
    index = env.user("alice").memory_index
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes("caf\xe9 notes\n".encode("latin-1"))
    make_job("job-latin1")
    env.script("job-latin1", {"content": decision("x", [PYTEST_ENTRY])})
    assert env.run("job-latin1").outcome is Outcome.APPLIED
    assert "prefers-pytest" in index.read_text(encoding="utf-8")
