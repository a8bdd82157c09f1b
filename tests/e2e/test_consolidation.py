"""Consolidation end to end: a real `celery worker` runs the `consolidate` task that a
reflection's threshold publishes, and the passes a real `celery beat` sweep publishes
(SPEC §11, §14), with the scripted LLM over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.paths import UserPaths
from tests.e2e.conftest import API_KEY, ROOT, Worker, running_worker
from tests.integration.conftest import decision
from tests.support.db import EVIDENCE
from tests.support.worker import stop_worker

pytestmark = pytest.mark.e2e

PROMPT = "Consolidate this user's memory."
MERGE = {"op": "remove", "name": "use-pytest", "merge_target": "prefers-pytest"}
KEPT = {
    "op": "update",
    "name": "prefers-pytest",
    "description": "Wants tests written with pytest, never unittest",
    "type": "feedback",
    "body": "Use pytest fixtures; never unittest.",
}
NEW = {
    "op": "add",
    "evidence": EVIDENCE,  # the job's request (SPEC §11)
    "name": "billing-db",
    "description": "Billing database",
    "type": "project",
    "body": "Postgres 16.",
}


def _entries(root: Path, *names: str) -> None:
    mem = UserPaths(root, "alice").memory_dir
    mem.mkdir(parents=True, exist_ok=True)
    for name in names:
        (mem / f"{name}.md").write_text(
            f"---\nname: {name}\ndescription: tests with pytest ({name})\ntype: feedback\n---\n"
            "Use pytest.\n"
        )


def _script(llm: ScriptedLlmServer, job: str, job_changes: list[dict[str, Any]]) -> None:
    llm.set_script(
        {
            "rules": [
                {"match": PROMPT, "replies": [{"content": decision("merge", [KEPT, MERGE])}]},
                {"match": f"job id: {job}\n", "replies": [{"content": decision("x", job_changes)}]},
            ]
        }
    )


def _passes(w: Worker, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r for r in w.rows() if r["kind"] == "consolidation"]
        if rows:
            return rows
        assert w.proc.poll() is None, w.log.read_text()[-4000:]
        time.sleep(0.2)
    pytest.fail(f"no consolidation row; worker log:\n{w.log.read_text()[-4000:]}")


def _check_consolidated(w: Worker, row: dict[str, Any], reason: str) -> None:
    assert (row["outcome"], row["piece_name"], row["memory_changes"]) == ("applied", "", 2)
    assert row["original_job_id"] == f"consolidate:alice:{row['reflection_job_id']}"
    u = UserPaths(w.root, "alice")
    assert not u.memory_file("use-pytest").exists()
    assert "never unittest" in u.memory_file("prefers-pytest").read_text()
    lines = [json.loads(x) for x in u.snapshot_index.read_text().splitlines()]
    [line] = [x for x in lines if x.get("kind") == "consolidation"]
    meta = json.loads((u.snapshot_dir(line["snapshot_id"]) / "meta.json").read_text())
    assert (meta["kind"], meta["reason"]) == ("consolidation", reason)


@pytest.fixture
def llm() -> Iterator[ScriptedLlmServer]:
    with ScriptedLlmServer({"rules": []}, require_key=API_KEY) as srv:
        yield srv


def test_a_reflection_past_the_threshold_publishes_a_pass(
    worker_env: Callable[..., dict[str, str]],
    llm: ScriptedLlmServer,
    pg_engine: Engine,
    tmp_path: Path,
    make_job: Any,
) -> None:
    """A reflection that leaves 3 live entries (the threshold) publishes `consolidate`
    (reason threshold); the worker runs it: one pass, the paraphrase merged."""
    env = worker_env(
        llm.base_url,
        REFLECTION_CONSOLIDATE_AT_ENTRIES="3",
        REFLECTION_CONSOLIDATE_EVERY_HOURS="0",
    )
    _entries(tmp_path / "users", "prefers-pytest", "use-pytest")
    make_job("job-t1")
    _script(llm, "job-t1", [NEW])
    with running_worker(env, llm, pg_engine, tmp_path) as w:
        w.publish("job-t1")
        [row] = _passes(w)
        _check_consolidated(w, row, "threshold")
        reflections = [r for r in w.rows() if r["kind"] == "reflection"]
        assert [r["outcome"] for r in reflections] == ["applied"]
        # A bad pass fails with a code and a row, and its task ends FAILURE.
        kwargs = {"user_id": "alice", "reason": "bogus"}
        w.producer.send_task("consolidate", kwargs=kwargs, queue="reflection")
        deadline = time.monotonic() + 60
        while not [r for r in w.rows() if r["error_code"] == "bad_request"]:
            assert time.monotonic() < deadline, w.log.read_text()[-4000:]
            time.sleep(0.2)
        [bad] = [r for r in w.rows() if r["error_code"] == "bad_request"]
        assert (bad["kind"], bad["outcome"], bad["piece_name"]) == ("consolidation", "failed", "")
        deadline = time.monotonic() + 30
        while (
            'raised expected: ReflectionFailed("bad_request: reason must' not in w.log.read_text()
        ):
            assert time.monotonic() < deadline, w.log.read_text()[-4000:]
            time.sleep(0.2)


def start_beat(env: dict[str, str], log: Path, schedule: Path) -> subprocess.Popen[bytes]:
    """`celery -A tasks beat`, as the README and docker compose run it."""
    cmd = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-s", str(schedule)]
    cmd += ["--loglevel", "INFO"]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_beat_sweeps_users_reflected_since_their_last_pass(
    worker_env: Callable[..., dict[str, str]],
    llm: ScriptedLlmServer,
    pg_engine: Engine,
    tmp_path: Path,
    make_job: Any,
) -> None:
    """A real beat sends `consolidate(user_id="*")` every 0.001 h; the sweep publishes a
    scheduled pass for alice (reflected, never consolidated); the worker merges her
    paraphrase. Later sweeps publish nothing: she was not reflected since."""
    env = worker_env(llm.base_url, REFLECTION_CONSOLIDATE_EVERY_HOURS="0.001")
    _entries(tmp_path / "users", "prefers-pytest", "use-pytest", "billing-db", "style")
    make_job("job-b1")
    _script(llm, "job-b1", [])
    beat_log = tmp_path / "beat.log"
    with running_worker(env, llm, pg_engine, tmp_path) as w:
        w.publish("job-b1")
        w.wait_rows(1)
        beat = start_beat(env, beat_log, tmp_path / "celerybeat-schedule")
        try:
            [row] = _passes(w)
            _check_consolidated(w, row, "scheduled")
            # Two more sweeps reach the worker and publish nothing.
            deadline = time.monotonic() + 60
            while w.log.read_text().count("consolidation sweep: 0 user(s) due") < 2:
                assert time.monotonic() < deadline, beat_log.read_text()[-3000:]
                assert beat.poll() is None, beat_log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            stop_worker(beat)
        assert len([r for r in w.rows() if r["kind"] == "consolidation"]) == 1
    text = beat_log.read_text()
    assert "Scheduler: Sending due task consolidation-sweep (consolidate)" in text
    assert "backend_cleanup" not in text
