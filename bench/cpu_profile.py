"""Profile reflections in-process: CPU per run of the pipeline alone, without Celery.

    .venv/bin/python -m bench.cpu_profile [--runs 400] [--cprofile]

Real Postgres and Redis (the benchmark's databases), the scripted LLM in a process of
its own answering at once; each run is a whole `run_reflection` (claim, load, prompt,
LLM, lock, journal, files, snapshot, commit). Prints wall and CPU milliseconds per run,
the CPU the run caused in Postgres, Redis and the scripted LLM (from /proc), its round
trips and fsyncs (counts, which the machine's noise does not blur), and with --cprofile
the functions that took the most CPU time (waits for a server are not counted).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import DB_URL, KEY, LOCK_URL, RemoteLlm, _answer, cpu_by_process, cpu_spent  # noqa: E402
from reflection.clients import make_engine  # noqa: E402
from reflection.llm import LlmClient  # noqa: E402
from reflection.pipeline import Deps, run_reflection  # noqa: E402
from reflection.settings import Settings  # noqa: E402
from reflection.shipped import BUILTIN_PIECES_DIR  # noqa: E402
from reflection.storage import jobs  # noqa: E402
from tests.support.counting import FSYNCS, POSTGRES, REDIS, counting  # noqa: E402
from tests.support.db import prepare_database  # noqa: E402

WARM_UP = 20


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--cprofile", action="store_true", help="print the top functions")
    args = ap.parse_args()
    engine = prepare_database(DB_URL)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE jobs, reflection_metrics, piece_edits, reflection_claims, memory_entries"
            )
        )
    lock_redis = redis.Redis.from_url(LOCK_URL)
    lock_redis.flushdb()
    llm = RemoteLlm()
    try:
        llm.set_script({"default": {"content": _answer()}})
        with tempfile.TemporaryDirectory() as tmp:
            s = Settings(
                database_url=DB_URL,
                redis_url=LOCK_URL,
                llm_endpoint=llm.base_url,
                llm_api_key=KEY,
                user_folder_root=Path(tmp),
                pieces_dir=BUILTIN_PIECES_DIR,
                coalesce_window_seconds=0,  # the overhead of one run alone (SPEC §14)
                _env_file=None,
            )
            run_engine = make_engine(DB_URL)
            deps = Deps(settings=s, engine=run_engine, redis=lock_redis, llm=LlmClient(s))
            rows = [
                {
                    "id": f"p-{i}",
                    "user_id": f"u{i % 50}",
                    "piece_name": "default",
                    "status": "succeeded",
                    "task": "Add a CSV export",
                }
                for i in range(args.runs + 2 * WARM_UP)
            ]
            with engine.begin() as conn:
                conn.execute(insert(jobs), rows)

            def run(row: dict[str, str]) -> None:
                kwargs = {
                    "original_job_id": row["id"],
                    "user_id": row["user_id"],
                    "piece_name": "default",
                    "outcome": "succeeded",
                }
                run_reflection(deps, reflection_job_id=str(uuid.uuid4()), kwargs=kwargs)

            for row in rows[:WARM_UP]:
                run(row)
            with counting(run_engine, lock_redis) as counts:
                for row in rows[WARM_UP : 2 * WARM_UP]:
                    run(row)
            profiler = cProfile.Profile(time.process_time)  # CPU, not waits
            procs0 = cpu_by_process()
            t0, c0 = time.perf_counter(), time.process_time()
            if args.cprofile:
                profiler.enable()
            for row in rows[2 * WARM_UP :]:
                run(row)
            profiler.disable()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            elsewhere = cpu_spent(procs0, cpu_by_process(), llm.proc.pid)
    finally:
        llm.close()
    label = " (under cProfile)" if args.cprofile else ""
    print(
        f"{args.runs} runs{label}: wall {wall * 1000 / args.runs:.1f} ms/run, "
        f"cpu {cpu * 1000 / args.runs:.1f} ms/run"
    )
    caused = ", ".join(
        f"{k} {v * 1000 / args.runs:.1f}" for k, v in elsewhere.items() if k != "workers"
    )
    print(f"CPU ms/run elsewhere on the machine: {caused}")
    per_run = ", ".join(f"{k} {v / WARM_UP:.1f}" for k, v in sorted(counts.items()))
    print(f"per run: {per_run}")
    budget = ", ".join(
        f"{k} {counts[k] / WARM_UP:.1f} (at most {most})"
        for k, most in ((FSYNCS, 4), (POSTGRES, 8), (REDIS, 4))
    )
    print(f"budget (SPEC §12, issue 24): {budget}")
    if args.cprofile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
