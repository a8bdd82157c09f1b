"""A user whose folder holds FIFOs does not freeze a real threads worker (issue 22,
item 1): before, after four such jobs every thread sat in the kernel opening a FIFO,
other users' jobs waited forever and SIGTERM hung."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.paths import UserPaths
from reflection.producer import make_producer, publish_reflect
from tasks import celeryconfig
from tests.blocking import release
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, script_for, start_worker, stop_worker, worker_env

__all__ = ["worker_env"]

pytestmark = pytest.mark.e2e

HOSTILE = "mallory"
# Published first, more of them than the worker has threads.
APPLIED = [f"m-{i}" for i in range(6)]
FIFO_LOG = "m-log"  # its activity.log is a FIFO
FIFO_PIECE = "m-piece"  # runs `bug-triage`, whose user copy is a FIFO
OTHERS = {f"o-{user}-{i}": user for user in ("ann", "bob", "cy") for i in range(3)}


def plant_fifos(u: UserPaths) -> list[Path]:
    """FIFOs at every place a run of `u` reads or appends a file."""
    fifos = [
        u.journal_dir / "20200101T000000Z-planted.json",
        u.memory_index,
        u.memory_dir / "pipe.md",
        u.snapshot_index,
        u.piece_copy("bug-triage"),
        u.activity_log(FIFO_LOG),
    ]
    for fifo in fifos:
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
    return fifos


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(path.lstat().st_mode)


def test_fifos_in_one_users_folder_never_stop_a_threads_worker(
    worker_env: Callable[..., dict[str, str]], pg_engine: Engine, tmp_path: Path, make_job: Any
) -> None:
    """Eight jobs of a user whose folder holds FIFOs, published ahead of other users'
    jobs on a 4-thread worker: every job ends (the FIFO ones `input_invalid`), the other
    users' jobs are applied, the FIFOs the runs need not replace are left, and SIGTERM
    ends the worker within its soft shutdown timeout."""
    root = tmp_path / "users"
    u = UserPaths(root, HOSTILE)
    fifos = plant_fifos(u)
    jobs = {j: (HOSTILE, "default") for j in [*APPLIED, FIFO_LOG]}
    jobs[FIFO_PIECE] = (HOSTILE, "bug-triage")
    jobs.update({j: (user, "default") for j, user in OTHERS.items()})
    for job, (user, piece) in jobs.items():
        make_job(job, user_id=user, piece_name=piece)
    with ScriptedLlmServer(script_for(list(jobs)), require_key=API_KEY) as llm:
        log = tmp_path / "worker.log"
        proc = start_worker(worker_env(llm.base_url), log, "--pool", "threads",
                            "--concurrency", "4")  # fmt: skip
        producer = make_producer(TEST_BROKER_URL)
        w = Worker(proc, log, llm, producer, pg_engine, root)
        try:
            for job, (user, piece) in jobs.items():
                publish_reflect(producer, original_job_id=job, user_id=user,
                                piece_name=piece, outcome="succeeded")  # fmt: skip
            rows = w.wait_rows(len(jobs), timeout=180)
            assert proc.poll() is None, "the worker died"
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(celeryconfig.worker_soft_shutdown_timeout)
            except subprocess.TimeoutExpired:
                release(fifos)
                pytest.fail(f"SIGTERM did not end the worker; its log:\n{log.read_text()[-4000:]}")
        finally:
            stop_worker(proc)
            producer.close()
    assert code == 0
    outcome = {r["original_job_id"]: (r["outcome"], r["error_code"]) for r in rows}
    assert len(rows) == len(jobs) == len(outcome), "a job was reflected twice"
    expected: dict[str, tuple[str, str | None]] = {
        j: ("applied", None) for j in [*APPLIED, *OTHERS]
    }
    expected |= {FIFO_LOG: ("failed", "input_invalid"), FIFO_PIECE: ("failed", "input_invalid")}
    assert outcome == expected
    lines = [json.loads(x) for x in u.snapshot_index.read_text().splitlines()]
    assert sorted(x["original_job_id"] for x in lines) == sorted(APPLIED)
    assert all(f"- lesson-{j} (feedback)" in u.memory_index.read_text() for j in APPLIED)
    left = [f for f in fifos if f not in (u.memory_index, u.snapshot_index)]
    assert all(is_fifo(f) for f in left), "a FIFO was removed or replaced"
    assert API_KEY not in log.read_text()
