"""The coalescing scenario of `bench.run` (SPEC §12; issue 24's targets), with real
workers, the real Redis and Postgres and the scripted LLM.

    burst    jobs arrive in per-user bursts of 5 within 10 s (one every 2 s per user,
             the users interleaved): LLM calls per job with coalescing on (the default
             window, 20 s) and prompt tokens per job against the same stream with
             coalescing off (window 0)
    spread   each user's jobs arrive further apart than the window (a 3 s window, jobs
             6 s apart): LLM calls per job, and how much later than the same stream with
             coalescing off a job's row is written (the median; at most the window)

Each job has a realistic request, result and activity log, and its user eight memory
entries, so the prompt is what it is in production: the system prompt, the piece and
memory (shared in a batch) and the job. Calls are counted from the metrics rows (the
LLM requests of each run), tokens from their `tokens_in` (the scripted server counts a
token per four characters).
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select

from reflection.frontmatter import render_entry
from reflection.models import MemoryEntry
from reflection.paths import UserPaths
from reflection.producer import publish_reflect
from reflection.storage import jobs, reflection_metrics

BURST = 5  # jobs per user burst
BURST_GAP = 2.0  # seconds between a user's jobs in a burst: 5 within 10 s
SPREAD_WINDOW = 3.0  # the window of the spread stream
SPREAD_GAP = 6.0  # seconds between a user's jobs in the spread stream (> the window)


class _Bench(Protocol):
    engine: Engine
    work: Path
    env_overrides: dict[str, str]

    def reset(self, latency: float) -> None: ...

    def worker(self, pool: str, concurrency: int, processes: int = 1) -> Any: ...


def _seed_user(root: Path, user: str) -> None:
    u = UserPaths(root, user)
    u.memory_dir.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        entry = MemoryEntry(
            name=f"fact-{i:02d}",
            description=f"A durable fact about the billing service, number {i}",
            type="project",
            body=("The billing service talks to Postgres 16 through pgbouncer. " * 5).strip(),
        )
        u.memory_file(entry.name).write_text(render_entry(entry))


def _add_job(engine: Engine, root: Path, user: str, n: int) -> str:
    job_id = f"c-{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(
            insert(jobs),
            [
                {
                    "id": job_id,
                    "user_id": user,
                    "piece_name": "default",
                    "status": "succeeded",
                    "task": f"Add a CSV export to report {n}, with a header row and tests",
                    "result": f"Done: report {n} exports CSV; 12 tests pass",
                }
            ],
        )
    log = UserPaths(root, user).activity_log(job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"[00:{i // 60:02d}:{i % 60:02d}] tool=Bash cmd=pytest -q -> {i} passed" for i in range(120)
    ]
    log.write_text(f"[00:00:00] user: add a CSV export to report {n}\n" + "\n".join(lines) + "\n")
    return job_id


def _stream(
    b: _Bench, producer: Any, users: list[str], per_user: int, gap: float
) -> dict[str, float]:
    """Publish each user's `per_user` jobs `gap` seconds apart (users interleaved, a user
    starting every gap / len(users)); when each was published."""
    root = b.work / "users"
    for u in users:
        _seed_user(root, u)
    planned = sorted(
        (k * gap + i * gap / len(users), u, k) for i, u in enumerate(users) for k in range(per_user)
    )
    made = {(u, k): _add_job(b.engine, root, u, k) for _, u, k in planned}
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    for at, u, k in planned:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        job_id = made[(u, k)]
        publish_reflect(
            producer, original_job_id=job_id, user_id=u, piece_name="default", outcome="succeeded"
        )
        sent[job_id] = time.time()
    return sent


def _rows(engine: Engine, n: int, timeout: float = 300) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(reflection_metrics)).mappings()]
        if len(rows) >= n:
            failed = [r for r in rows if r["outcome"] == "failed"]
            if failed:
                raise SystemExit(f"reflections failed during the bench: {failed[:3]}")
            return rows
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {n} rows (saw {len(rows)})")
        time.sleep(0.1)


def _run(
    b: _Bench,
    producer: Any,
    users: list[str],
    per_user: int,
    gap: float,
    window: float,
) -> dict[str, float]:
    b.reset(latency=0.5)
    b.env_overrides = {"REFLECTION_COALESCE_WINDOW_SECONDS": str(window)}
    try:
        with b.worker("threads", 20):
            sent = _stream(b, producer, users, per_user, gap)
            rows = _rows(b.engine, len(sent))
    finally:
        b.env_overrides = {}
    n = len(sent)
    waits = [r["created_at"].timestamp() - sent[r["original_job_id"]] for r in rows]
    return {
        "calls_per_job": sum(r["llm_attempts"] for r in rows) / n,
        "prompt_tokens_per_job": sum(r["tokens_in"] for r in rows) / n,
        "coalesced_share": sum(r["outcome"] == "coalesced" for r in rows) / n,
        "median_latency_s": statistics.median(waits),
        "max_latency_s": max(waits),
    }


def coalescing(b: _Bench, producer: Any, quick: bool) -> dict[str, Any]:
    """The burst stream with coalescing on (window 20 s) and off, and the spread stream
    with a 3 s window: the ratios of issue 24. `quick` (the smoke test): two users,
    bursts of 3 a second apart in a 3 s window, spread jobs 4 s apart in a 2 s one."""
    users = [f"burst-{i}" for i in range(2 if quick else 6)]
    burst, gap, window = (3, 1.0, 3.0) if quick else (BURST, BURST_GAP, 20.0)
    on = _run(b, producer, users, burst, gap, window)
    off = _run(b, producer, [f"{u}-off" for u in users], burst, gap, window=0)
    spread_users = [f"spread-{i}" for i in range(2 if quick else 4)]
    per_user, gap, window = (2, 4.0, 2.0) if quick else (3, SPREAD_GAP, SPREAD_WINDOW)
    spread = _run(b, producer, spread_users, per_user, gap, window)
    alone = _run(b, producer, [f"{u}-off" for u in spread_users], per_user, gap, window=0)
    return {
        "burst_calls_per_job": on["calls_per_job"],
        "burst_calls_per_job_off": off["calls_per_job"],
        "burst_prompt_tokens_ratio": on["prompt_tokens_per_job"] / off["prompt_tokens_per_job"],
        "burst_prompt_tokens_per_job": on["prompt_tokens_per_job"],
        "burst_prompt_tokens_per_job_off": off["prompt_tokens_per_job"],
        "burst_max_latency_s": on["max_latency_s"],
        "spread_calls_per_job": spread["calls_per_job"],
        "spread_added_latency_s": spread["median_latency_s"] - alone["median_latency_s"],
        "spread_window_s": window,
        "per_round": {"burst_on": on, "burst_off": off, "spread": spread, "spread_off": alone},
    }
