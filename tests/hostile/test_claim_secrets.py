"""Issue 22 item 3: a detected key never survives in Postgres. The claim keeps the
decision between the LLM's answer and the run's end; it is stored masked, with the secret
verdicts computed on the raw text, and dropped once the claim ends done or failed for
good (SPEC §14). Real Postgres and Redis, the scripted LLM over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from reflection.errors import LockBusyError
from reflection.lock import user_lock
from reflection.models import Code, Outcome
from reflection.storage import reflection_claims
from tests.hostile.conftest import Hostile, add, decision

KEY = "AKIAIOSFODNN7EXAMPLE"
VAULT = "hvs.CAESIJ1m2n3o4p5q6r7s8t9u0v1w2x3y4z5A6B7C8D9E0F1G"
# The job's log prints the key; the model quotes it, stores it and talks about it.
LEAKY = decision(
    f"the deploy log printed {KEY}; keep it",
    [
        add(
            "deploy-key",
            f"aws {KEY}",
            type="reference",
            evidence=[f"AWS_ACCESS_KEY_ID={KEY}"],
        ),
        add("csv-export", "The reports page has a CSV export.", evidence=["Add a CSV export"]),
    ],
)


def _claims(h: Hostile) -> list[dict[str, Any]]:
    with h.env.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(reflection_claims)).mappings()]


def _no_raw_key(h: Hostile) -> None:
    text = json.dumps(_claims(h), default=str)
    assert KEY not in text and VAULT not in text


def _job(h: Hostile, job_id: str) -> None:
    h.job(job_id, task="Add a CSV export")
    log = h.user().activity_log(job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"[00:00:05] tool=Bash cmd=env -> AWS_ACCESS_KEY_ID={KEY} VAULT={VAULT}\n")


def test_a_run_retried_after_the_decision_was_stored_keeps_no_raw_key(hostile: Hostile) -> None:
    """The user's lock is held: the run leaves to be retried with its decision on the
    claim. Nothing stored holds the key; the retry still refuses the change that held it
    (the stored verdict), accepts the other, and the decision is dropped once done."""
    h = hostile
    _job(h, "job-lk")
    h.env.script("job-lk", {"content": LEAKY})
    with user_lock(h.env.deps.redis, "alice", expire=30, wait=0), pytest.raises(LockBusyError):
        h.run("job-lk", make_job=False, reflection_job_id="rid-lk")
    [claim] = _claims(h)
    assert claim["state"] == "running" and claim["decision"] is not None
    stored = json.loads(claim["decision"])
    assert stored["secrets"][0] and stored["secrets"][1] == []
    _no_raw_key(h)

    report = h.run("job-lk", make_job=False, reflection_job_id="rid-lk")
    assert [v.code for v in report.verdicts] == [Code.SECRET_DETECTED, Code.OK]
    assert h.env.llm_calls() == 1
    [claim] = _claims(h)
    assert (claim["state"], claim["decision"]) == ("done", None)


def test_a_run_that_fails_for_good_after_the_decision_was_stored_drops_it(
    hostile: Hostile,
) -> None:
    """MEMORY.md is a link out of the folder: the run fails `input_invalid` after the LLM
    answered. The claim ends failed, without its decision."""
    h = hostile
    _job(h, "job-perm")
    h.entry("real")
    (h.user().memory_index).symlink_to(h.outside / "canary.md")
    h.env.script("job-perm", {"content": LEAKY})
    report = h.run("job-perm", make_job=False)
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "input_invalid")
    [claim] = _claims(h)
    assert (claim["state"], claim["decision"]) == ("failed", None)
    _no_raw_key(h)
    h.canary_intact()


def test_a_run_that_crashes_after_the_decision_was_stored_keeps_it_masked(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while planning: the lease ends for a republish, keeping the decision so the
    LLM is not asked again; it is the masked one."""
    import reflection.pipeline as pipeline_mod

    h = hostile
    _job(h, "job-bug")
    h.env.script("job-bug", {"content": LEAKY})

    def bug(**_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline_mod, "plan", bug)
    with pytest.raises(RuntimeError):
        h.run("job-bug", make_job=False)
    [claim] = _claims(h)
    assert claim["decision"] is not None and "[REDACTED" in claim["decision"]
    _no_raw_key(h)
