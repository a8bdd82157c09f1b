"""The worker's Celery app plus baseline tasks on the same broker and settings:
`bench.noop` (the floor of Celery itself), `bench.sleep` (a task that only waits L),
`bench.sleep_burn` (waits L, then spends a given CPU time: a reflection's shape without
its work), `bench.floor` (the I/O every reflection must do, and nothing else) and
`bench.io_floor` (the I/O a reflection does within the budgets of SPEC §12, and nothing
else: the ceiling any reflection with that I/O can reach against the floor)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import redis
from sqlalchemy import Engine, insert, select, update

from reflection.fsio import append_line, atomic_delete, atomic_write, sync_filesystem
from reflection.lock import user_lock
from reflection.paths import UserPaths
from reflection.pipeline import Deps
from reflection.storage import jobs, reflection_claims, reflection_metrics
from reflection.storage.db import single_statement, utcnow
from tasks import app
from tasks.resources import get_deps

COUNTER = "bench:done"
_local = threading.local()


def _redis() -> redis.Redis:
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None or getattr(_local, "pid", None) != os.getpid():
        client = redis.Redis.from_url(os.environ["REFLECTION_REDIS_URL"])
        _local.client, _local.pid = client, os.getpid()
    return client


@app.task(name="bench.noop")
def noop() -> None:
    _redis().incr(COUNTER)


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)
    _redis().incr(COUNTER)


@app.task(name="bench.sleep_burn")
def sleep_burn(seconds: float, cpu_ms: float) -> None:
    time.sleep(seconds)
    end = time.thread_time() + cpu_ms / 1000
    while time.thread_time() < end:  # holds the GIL, as a run's Python work does
        pass
    _redis().incr(COUNTER)


@app.task(name="bench.floor")
def floor(user_id: str) -> None:
    """The least a reflection can do with this stack: one LLM decision through the openai
    SDK (validated), one Postgres transaction writing a row, the user's Redis lock taken
    and released, and one file written durably under it."""
    deps = get_deps()
    s = deps.settings
    deps.llm.decide(system="Reflect.", user="The job succeeded.", user_id=user_id)
    with deps.engine.begin() as conn:
        conn.execute(
            insert(jobs).values(
                id=f"floor-{uuid.uuid4().hex}",
                user_id=user_id,
                piece_name="default",
                status="succeeded",
                task="-",
            )
        )
    with user_lock(deps.redis, user_id, expire=s.lock_expire_seconds, wait=s.lock_wait_seconds):
        atomic_write(s.user_folder_root / user_id / "floor.md", "a learned fact\n")
    _redis().incr(COUNTER)


# A reflection's sizes in the overhead scenario (bench/run.py `_answer`, the default piece):
# its prompt, the decision kept on the claim, its journal and snapshot meta.
SYSTEM_PROMPT = "Reflect. " * 512
USER_PROMPT = "x" * 4_700
DECISION = "d" * 1_000
JOURNAL = "j" * 2_000
META = "m" * 800
# What `io_floor` may leave out (the `ceiling` scenario measures the ceiling without it).
STATEMENTS, PROMPT, FILES = "statements", "prompt", "files"
IO_FLOOR_DIR = "io-floor"  # in each user's folder


@app.task(name="bench.io_floor")
def io_floor(job_id: str, user_id: str, without: tuple[str, ...] = ()) -> None:
    io_floor_run(get_deps(), job_id, user_id, tuple(without))


def io_floor_run(deps: Deps, job_id: str, user_id: str, without: tuple[str, ...] = ()) -> None:
    """The I/O of one reflection at the budgets of SPEC §12 (fsyncs 3, Postgres 8 round
    trips, Redis 4), with the same libraries, helpers and sizes, and none of its logic:
    the slot and the lock (4 Redis round trips); five single statements (claim, job,
    decision, state, last edit) and one transaction (the metrics row); the memory and
    the piece read; one LLM decision on a prompt of a reflection's size; the journal
    written durably (2 fsyncs), the memory file, the snapshot and its index line renamed
    in, one syncfs, the journal deleted. Its completion is its metrics row, counted as a
    reflection's is. `without` drops the four statements after the claim (STATEMENTS),
    the prompt's size (PROMPT: the floor's prompt) or the journal and snapshot (FILES:
    the memory file alone, written durably as the floor's)."""
    s = deps.settings
    slot = f"bench:slot:{user_id}"
    deps.redis.set(slot, job_id, px=60_000)
    claim = reflection_claims.c
    with single_statement(deps.engine) as conn:
        conn.execute(
            insert(reflection_claims).values(
                original_job_id=job_id,
                reflection_job_id=job_id,
                user_id=user_id,
                state="running",
                lease_expires_at=utcnow(),
            )
        )
    statements = STATEMENTS not in without
    if statements:
        with single_statement(deps.engine) as conn:
            conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
    paths = UserPaths(s.user_folder_root, user_id)
    memory = paths.memory_dir
    for entry in sorted(memory.iterdir()) if memory.is_dir() else []:
        entry.read_bytes()
    (s.pieces_dir / "default.yaml").read_bytes()
    if PROMPT in without:
        deps.llm.decide(system="Reflect.", user="The job succeeded.", user_id=user_id)
    else:
        deps.llm.decide(system=SYSTEM_PROMPT, user=USER_PROMPT, user_id=user_id)
    if statements:
        with single_statement(deps.engine) as conn:
            decided = update(reflection_claims).where(claim.original_job_id == job_id)
            conn.execute(decided.values(decision=DECISION))
    with user_lock(deps.redis, user_id, expire=s.lock_expire_seconds, wait=s.lock_wait_seconds):
        if statements:
            with single_statement(deps.engine) as conn:
                conn.execute(select(claim.state).where(claim.original_job_id == job_id)).first()
            with single_statement(deps.engine) as conn:
                last = select(claim.updated_at).where(claim.user_id == user_id).limit(1)
                conn.execute(last).first()
        _io_floor_files(paths, job_id, FILES not in without, deps.engine)
    deps.redis.delete(slot)


def _io_floor_files(paths: UserPaths, job_id: str, journaled: bool, engine: Engine) -> None:
    """The journal, the memory file, the snapshot and its index line, one sync, the
    metrics row, the journal deleted; or (`journaled=False`) the memory file written
    durably and the metrics row. In a folder of their own, at a run's depths, so that
    the reflections of the same users never read them."""
    home, own = paths.home, paths.home / IO_FLOOR_DIR
    memory, journal = own / "memory.md", own / "journal" / f"{job_id}.json"
    if journaled:
        atomic_write(journal, JOURNAL, root=home)
        atomic_write(memory, "a learned fact\n", root=home, durable=False)
        atomic_write(own / job_id / "meta.json", META, root=home, durable=False)
        append_line(own / "index.jsonl", job_id, root=home, durable=False)
        sync_filesystem(home)
    else:
        atomic_write(memory, "a learned fact\n", root=home)
    with engine.begin() as conn:
        conn.execute(
            insert(reflection_metrics).values(
                reflection_job_id=job_id,
                original_job_id=job_id,
                user_id=paths.user_id,
                piece_name="default",
                outcome="rejected",
            )
        )
    if journaled:
        atomic_delete(journal, root=home, durable=False)


__all__ = ["app", "floor", "io_floor", "io_floor_run", "noop", "sleep", "sleep_burn"]
