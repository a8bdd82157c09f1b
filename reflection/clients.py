"""Every client the worker, the CLI and `doctor` use: the SQLAlchemy engine, the Redis
clients and the LLM client, each built here with the timeouts of its caller.

    profile  Postgres connect  statement  Redis connect/socket  health check  LLM request
    WORKER   driver's default  30 s       5 s / 10 s            30 s          the setting
    CLI      5 s               30 s       3 s / 10 s            off           the setting
    DOCTOR   5 s               5 s        3 s / 3 s             off           at most 10 s

The CLI's `run` drives the pipeline as the worker does, so it has the worker's statement
timeout; `doctor` must answer fast when a service is down. Nothing is built at import
time: a forking worker builds its clients after fork (`tasks.resources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai
import redis
from sqlalchemy import Engine, create_engine

from reflection.idleping import ping_idle_connections
from reflection.llm import LlmClient, openai_client
from reflection.pipeline import Deps
from reflection.settings import Settings
from reflection.turns import Turns

STATEMENT_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 5.0  # a pooled connection unused this long is pinged first


@dataclass(frozen=True)
class Timeouts:
    """How long one caller waits for each service (seconds unless said otherwise)."""

    db_connect: int | None  # None: the driver's default
    db_statement_ms: int  # Postgres `statement_timeout`; SQLite's busy timeout
    redis_connect: float
    redis_socket: float
    redis_health_check: int = 0  # seconds between checks of an idle connection; 0: off
    llm_request: float | None = None  # a cap on REFLECTION_LLM_TIMEOUT_SECONDS


# No statement waits forever (a row lock held by a stalled peer, a hung server): a run
# fails over to a retry instead of holding its worker slot. The lock client's socket
# timeout must exceed the lock wait (REFLECTION_LOCK_WAIT_SECONDS, at most 8 s).
WORKER = Timeouts(
    db_connect=None,
    db_statement_ms=STATEMENT_TIMEOUT_MS,
    redis_connect=5,
    redis_socket=10,
    redis_health_check=30,
)
CLI = Timeouts(db_connect=5, db_statement_ms=STATEMENT_TIMEOUT_MS, redis_connect=3, redis_socket=10)
DOCTOR = Timeouts(
    db_connect=5, db_statement_ms=5_000, redis_connect=3, redis_socket=3, llm_request=10.0
)


def make_engine(url: str, timeouts: Timeouts = WORKER) -> Engine:
    """An engine with a small pool that survives server restarts (a connection idle for
    a while is pinged before use; see `idleping`)."""
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": timeouts.db_statement_ms / 1000})
    args: dict[str, Any] = {"options": f"-c statement_timeout={timeouts.db_statement_ms}"}
    if timeouts.db_connect is not None:
        args["connect_timeout"] = timeouts.db_connect
    engine = create_engine(url, pool_size=5, max_overflow=5, pool_recycle=1800, connect_args=args)
    ping_idle_connections(engine, after_seconds=PING_AFTER_IDLE_SECONDS)
    return engine


def make_redis(url: str, timeouts: Timeouts = WORKER) -> redis.Redis:
    """A Redis client (the user lock's, or the broker's for `doctor`)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeouts.redis_socket,
        socket_connect_timeout=timeouts.redis_connect,
        health_check_interval=timeouts.redis_health_check,
    )


def make_llm(settings: Settings) -> LlmClient:
    """The LLM client a run asks for its decision."""
    return LlmClient(settings)


def make_openai(settings: Settings, timeouts: Timeouts) -> openai.OpenAI:
    """A bare client of the LLM endpoint, for `doctor`'s look at its models."""
    timeout = settings.llm_timeout_seconds
    if timeouts.llm_request is not None:
        timeout = min(timeout, timeouts.llm_request)
    return openai_client(settings, timeout=timeout)


def worker_deps(settings: Settings) -> Deps:
    """The clients of one worker process (build them after fork)."""
    return Deps(
        settings=settings,
        engine=make_engine(settings.database_url, WORKER),
        redis=make_redis(settings.redis_url, WORKER),
        llm=make_llm(settings),
        turns=Turns(settings.cpu_turns),
    )
