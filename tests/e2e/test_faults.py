"""Crash consistency with real worker processes: SIGKILL at named points of a run.

Each case kills the worker child at one point (REFLECTION_FAULT, see
tests/support/faults.py; these workers run the test-only app `tests.support.fault_app`,
which installs the injector); Celery requeues the task (late ack, reject on worker
lost), a fresh child finishes it, and the user's folder, snapshot, index and rows must
equal one clean run.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.frontmatter import render_entry
from reflection.models import MemoryEntry
from reflection.paths import UserPaths
from reflection.producer import make_producer, publish_reflect
from reflection.shipped import BUILTIN_PIECES_DIR
from reflection.storage import entry_records, piece_edits
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, start_worker, stop_worker
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.e2e
FAULT_APP = "tests.support.fault_app"

CHANGES: list[dict[str, Any]] = [
    {
        "op": "add",
        "evidence": EVIDENCE,
        "name": f"lesson-{i}",
        "description": f"Lesson {i}",
        "type": "feedback",
        "body": f"Durable lesson number {i}.",
    }
    for i in range(3)
]


KNOWN = MemoryEntry(name="known-fact", description="Known", type="project", body="Kept.")


def _decision() -> dict[str, Any]:
    text = (BUILTIN_PIECES_DIR / "default.yaml").read_text()
    line = next(x for x in text.splitlines() if x.startswith("description:"))
    edit = {"yaml": text.replace(line, line + " (tuned)", 1), "summary": "tune"}
    return {
        "reasoning": "three lessons and a tune-up",
        "memory_changes": CHANGES,
        "piece_edit": edit,
        "confirmed": [KNOWN.name],
    }


def _seed(root: Path) -> None:
    """An entry written outside the worker, which the run confirms."""
    u = UserPaths(root, "alice")
    u.memory_dir.mkdir(parents=True)
    u.memory_file(KNOWN.name).write_text(render_entry(KNOWN))


def _journal_settles(u: UserPaths, timeout: float = 45) -> None:
    """A run killed after its commit leaves a journal that its redelivery deletes once the
    dead worker's lock has expired."""
    deadline = time.monotonic() + timeout
    while u.journal_dir.exists() and list(u.journal_dir.glob("*")):
        assert time.monotonic() < deadline, "the journal was never completed"
        time.sleep(0.2)


def _check_one_clean_run(w: Worker, task_id: str) -> None:
    u = UserPaths(w.root, "alice")
    _journal_settles(u)
    rows = w.rows()
    assert [(r["reflection_job_id"], r["outcome"]) for r in rows] == [(task_id, "applied")]
    assert rows[0]["memory_changes"] == 3 and rows[0]["piece_edited"] is True
    for ch in CHANGES:
        assert f"Durable lesson number {ch['name'][-1]}." in u.memory_file(ch["name"]).read_text()
    index = u.memory_index.read_text()
    assert all(ch["name"] in index for ch in CHANGES)
    assert "(tuned)" in u.piece_copy("default").read_text()
    lines = [json.loads(x) for x in u.snapshot_index.read_text().splitlines()]
    assert len(lines) == 1
    snaps = [p for p in u.reflections_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert [p.name for p in snaps] == [lines[0]["snapshot_id"]]
    meta = json.loads((snaps[0] / "meta.json").read_text())
    assert meta["memory_changes"] == 3
    assert sorted(p.name for p in (snaps[0] / "after").iterdir()) == [
        f"{c['name']}.md" for c in CHANGES
    ]
    assert not [p for p in u.home.rglob("*.tmp")], "a temp file was left behind"
    with w.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(piece_edits)).scalar_one() == 1
    records = {r.name: r for r in entry_records(engine=w.engine, user_id="alice")}
    assert set(records) == {KNOWN.name, *(ch["name"] for ch in CHANGES)}
    assert all(records[ch["name"]].created_by_job == task_id for ch in CHANGES)
    known = records[KNOWN.name]
    assert (known.origin, known.confirmations) == ("external", 1)  # counted once


@pytest.mark.parametrize(
    "point",
    [
        "before_llm",
        "after_llm",
        "after_journal",
        "between_writes",
        "after_files",
        "after_snapshot",
        "after_commit",
    ],
)
def test_sigkill_at_a_point_ends_as_one_clean_run(
    point: str,
    worker_env: Callable[..., dict[str, str]],
    pg_engine: Engine,
    make_job: Any,
    tmp_path: Path,
) -> None:
    """A worker killed at `point` leaves, once redelivered, exactly one clean run."""
    make_job("job-k")
    _seed(tmp_path / "users")
    marker = tmp_path / f"fault-{point}"
    with ScriptedLlmServer({"default": {"content": _decision()}}, require_key=API_KEY) as llm:
        env = worker_env(llm.base_url, REFLECTION_FAULT=f"{point}:kill:{marker}")
        log = tmp_path / "worker.log"
        proc = start_worker(env, log, app=FAULT_APP)
        producer = make_producer(TEST_BROKER_URL)
        try:
            w = Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")
            task_id = publish_reflect(
                producer,
                original_job_id="job-k",
                user_id="alice",
                piece_name="default",
                outcome="succeeded",
            )
            w.wait_rows(1, timeout=90)
            time.sleep(0.5)  # a doubled row would show up now
            assert marker.exists(), "the fault point was never reached"
            _check_one_clean_run(w, task_id)
            calls = w.llm_calls()
            assert calls == (2 if point == "after_llm" else 1)
        finally:
            stop_worker(proc)
            producer.close()


def test_whole_worker_killed_during_the_llm_call_is_redelivered(
    worker_env: Callable[..., dict[str, str]], pg_engine: Engine, make_job: Any, tmp_path: Path
) -> None:
    """The whole worker (parent and children) dies mid-call; a new worker gets the task
    after the visibility timeout and finishes it once."""
    make_job("job-k")
    _seed(tmp_path / "users")
    script = {"default": {"content": _decision(), "delay": 4}}
    with ScriptedLlmServer(script, require_key=API_KEY) as llm:
        env = worker_env(llm.base_url, REFLECTION_BROKER_VISIBILITY_TIMEOUT="5")
        log = tmp_path / "worker.log"
        proc = start_worker(env, log, "--pool", "threads")
        producer = make_producer(TEST_BROKER_URL)
        w = Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")
        try:
            task_id = publish_reflect(
                producer,
                original_job_id="job-k",
                user_id="alice",
                piece_name="default",
                outcome="succeeded",
            )
            deadline = time.monotonic() + 30
            while w.llm_calls() == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert w.llm_calls() == 1
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            llm.set_script({"default": {"content": _decision()}})
            w.proc = start_worker(env, log, "--pool", "threads")
            w.wait_rows(1, timeout=90)
            time.sleep(0.5)
            _check_one_clean_run(w, task_id)
        finally:
            stop_worker(w.proc)
            producer.close()
