"""The cost scenario of `bench.run` (SPEC §12; issue 24): what a reflection costs beside
its CPU, measured in-process against the real Postgres and Redis and the scripted LLM.

- `cached_share_2nd_job`: of the prompt tokens of a user's 2nd job, with memory and
  piece unchanged since the 1st, the share the scripted server served from its prompt
  cache (OpenAI's rule: the longest prefix seen before, from 1,024 tokens in 128-token
  blocks; tokens counted as 4 characters). The user has 20 memory entries and each job
  a long activity log (cut to `activity_log_max_bytes`), a request and a result.
- `fsyncs_per_run`, `postgres_round_trips_per_run`, `redis_round_trips_per_run`: counted
  (`tests.support.counting`) over runs that each write a memory entry for a new user
  (the most writes a run makes), after as many warm-up runs.

Coalescing's figures (LLM calls and prompt tokens per job on bursts) belong here too,
with `REFLECTION_COALESCE_WINDOW_SECONDS` > 0: left to the coalescing work.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, insert, select

from bench.run import DB_URL, KEY, LOCK_URL, RemoteLlm, _answer
from reflection.clients import make_engine
from reflection.llm import LlmClient
from reflection.paths import UserPaths
from reflection.pipeline import Deps, run_reflection
from reflection.settings import Settings
from reflection.shipped import BUILTIN_PIECES_DIR
from reflection.storage import jobs, reflection_metrics
from tests.support.counting import FSYNCS, POSTGRES, REDIS, counting

COUNTED_RUNS = 20
ABSTAIN: dict[str, Any] = {
    "reasoning": "Nothing durable.",
    "memory_changes": [],
    "piece_edit": None,
}


def _memory(paths: UserPaths) -> None:
    paths.memory_dir.mkdir(parents=True, exist_ok=True)
    for i in range(20):
        name = f"entry-{i:02d}"
        (paths.memory_dir / f"{name}.md").write_text(
            f"---\nname: {name}\ndescription: A durable fact number {i}\ntype: project\n---\n"
            + "The billing service talks to Postgres 16. " * 12
        )


def _job(engine: Engine, paths: UserPaths, job_id: str, task: str) -> None:
    log = paths.activity_log(job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        for i in range(20_000):
            f.write(f'[{i:08d}] tool=Bash cmd="pytest -q" -> {i % 7} failed, {i % 50} ok\n')
    with engine.begin() as conn:
        conn.execute(
            insert(jobs),
            [
                {
                    "id": job_id,
                    "user_id": paths.user_id,
                    "piece_name": "default",
                    "status": "succeeded",
                    "task": task,
                    "result": f"Done: {task.lower()}; 14 tests pass.",
                }
            ],
        )


def _run(deps: Deps, user: str, job_id: str) -> None:
    kwargs = {
        "original_job_id": job_id,
        "user_id": user,
        "piece_name": "default",
        "outcome": "succeeded",
    }
    run_reflection(deps, reflection_job_id=str(uuid.uuid4()), kwargs=kwargs)


def cost(work: Path, llm: RemoteLlm) -> dict[str, Any]:
    """The figures above (the scripted LLM answers at once)."""
    engine = make_engine(DB_URL)
    lock = redis.Redis.from_url(LOCK_URL)
    # Coalescing off, as SPEC §14 asks of the overhead bench (where the setting exists).
    off = (
        {"coalesce_window_seconds": 0} if "coalesce_window_seconds" in Settings.model_fields else {}
    )
    s = Settings(
        database_url=DB_URL,
        redis_url=LOCK_URL,
        llm_endpoint=llm.base_url,
        llm_api_key=KEY,
        user_folder_root=work / "cost",
        pieces_dir=BUILTIN_PIECES_DIR,
        _env_file=None,
    ).model_copy(update=off)
    client = LlmClient(s)
    deps = Deps(settings=s, engine=engine, redis=lock, llm=client)
    tag = uuid.uuid4().hex[:8]
    try:
        llm.reset()
        llm.set_script({"default": {"content": ABSTAIN}})
        user = f"cost-{tag}"
        paths = UserPaths(s.user_folder_root, user)
        _memory(paths)
        ids = [f"cost-{tag}-1", f"cost-{tag}-2"]
        _job(engine, paths, ids[0], "Migrate the settings loader to pydantic-settings")
        _job(engine, paths, ids[1], "Add a CSV export to the invoices page")
        for job_id in ids:
            _run(deps, user, job_id)
        with engine.connect() as conn:
            m = reflection_metrics.c
            second = conn.execute(
                select(m.tokens_in, m.tokens_cached).where(m.original_job_id == ids[1])
            ).one()
        llm.set_script({"default": {"content": _answer()}})
        users = [f"cost-{tag}-u{i}" for i in range(2 * COUNTED_RUNS)]
        for i, u in enumerate(users):
            _job(engine, UserPaths(s.user_folder_root, u), f"cost-{tag}-c{i}", "Add a flag")
        for i, u in enumerate(users[:COUNTED_RUNS]):
            _run(deps, u, f"cost-{tag}-c{i}")
        with counting(engine, lock) as counts:
            for i, u in enumerate(users[COUNTED_RUNS:], start=COUNTED_RUNS):
                _run(deps, u, f"cost-{tag}-c{i}")
    finally:
        client.close()
        engine.dispose()
    return {
        "cached_share_2nd_job": second.tokens_cached / second.tokens_in,
        "prompt_tokens_2nd_job": second.tokens_in,
        "fsyncs_per_run": counts[FSYNCS] / COUNTED_RUNS,
        "postgres_round_trips_per_run": counts[POSTGRES] / COUNTED_RUNS,
        "redis_round_trips_per_run": counts[REDIS] / COUNTED_RUNS,
    }
