"""One `reflection eval --stream`: a database, Redis, a scratch folder, the world, and the
runs (rules off, on, or both) measured into a report."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import redis
from sqlalchemy import Engine

from reflection import migrations
from reflection.clients import CLI, make_engine, make_redis
from reflection.evals.stream import report
from reflection.evals.stream.rules import rules_for
from reflection.evals.stream.runner import ModeResult, StreamError, run_mode
from reflection.evals.stream.world import build_world
from reflection.settings import Settings
from reflection.storage import platform_metadata

Which = Literal["off", "on", "both"]


@dataclass(frozen=True)
class StreamConfig:
    jobs: int = 300
    users: int = 5
    days: int = 180
    seed: int = 1
    sample_every: int = 5


def prepare(url: str) -> Engine:
    """The worker's tables (migrated to head) and the platform's `jobs` table at `url`."""
    migrations.upgrade(url)
    engine = make_engine(url, CLI)
    platform_metadata.create_all(engine)  # `jobs`, when the database has none
    return engine


def _redis(url: str) -> redis.Redis:
    client = make_redis(url, CLI)
    try:
        client.ping()
    except redis.RedisError as e:
        raise StreamError(
            f"Redis at {url} does not answer ({e}); the worker's locks need it"
        ) from e
    return client


def run_stream(
    config: StreamConfig,
    settings: Settings,
    *,
    which: Which = "both",
    database_url: str | None = None,
    redis_url: str | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the stream and return its report (`report.build`). Without `database_url` it
    runs on a scratch SQLite file; a database given must not hold this stream yet."""
    world = build_world(seed=config.seed, jobs=config.jobs, users=config.users, days=config.days)
    with ExitStack() as stack:
        root = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="reflection-stream-"))
        )
        root.mkdir(parents=True, exist_ok=True)
        url = database_url or f"sqlite:///{root / 'stream.db'}"
        engine = prepare(url)
        stack.callback(engine.dispose)
        client = _redis(redis_url or settings.redis_url)
        stack.callback(client.close)
        results: dict[str, ModeResult] = {}
        for mode in ("off", "on"):
            if which not in (mode, "both"):
                continue
            rules = rules_for(mode == "on")
            progress(f"rules {mode} ({rules.label}): {config.jobs} jobs")
            results[mode] = run_mode(
                world,
                mode=mode,
                rules=rules,
                settings=settings,
                engine=engine,
                redis_client=client,
                root=root / "users",
                sample_every=config.sample_every,
            )
    return report.build(asdict(config), results.get("off"), results.get("on"))
