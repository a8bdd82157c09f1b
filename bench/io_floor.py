"""`bench.io_floor`'s work, apart from the Celery app (bench/app.py registers it as a
task; the overhead test calls it in-process): the I/O of one reflection at the budgets
of SPEC §12, and nothing else."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update

from reflection.fsio import append_line, atomic_delete, atomic_write, sync_filesystem
from reflection.lock import user_lock
from reflection.paths import UserPaths
from reflection.pipeline import Deps
from reflection.storage import jobs, reflection_claims, reflection_metrics
from reflection.storage.db import single_statement, utcnow

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
CEILING_VARIANTS: dict[str, tuple[str, ...]] = {
    "io_floor": (),
    "without_statements": (STATEMENTS,),
    "without_prompt": (PROMPT,),
    "without_files": (FILES,),
    "without_all_three": (STATEMENTS, PROMPT, FILES),
}


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
