"""At-least-once delivery, exactly-once effect, with real workers: concurrent deliveries,
warm shutdown, and Redis or Postgres restarted in the middle of a burst."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from reflection.producer import publish_reflect
from tests.conftest import IN_CI
from tests.e2e.conftest import Worker, burst_through_outage, script_for

pytestmark = pytest.mark.e2e


def test_two_deliveries_at_once_make_one_llm_call(worker: Worker, make_job: Any) -> None:
    """The same job published twice at the same moment: one LLM call, one applied run and
    one duplicate."""
    make_job("job-twice")
    worker.llm.set_script(script_for(["job-twice"], delay=2))
    kw = {
        "original_job_id": "job-twice",
        "user_id": "alice",
        "piece_name": "default",
        "outcome": "succeeded",
    }
    publish_reflect(worker.producer, **kw)  # type: ignore[arg-type]
    publish_reflect(worker.producer, **kw)  # type: ignore[arg-type]
    rows = worker.wait_rows(2, timeout=60)
    assert sorted(r["outcome"] for r in rows) == ["applied", "duplicate"]
    assert worker.llm_calls() == 1


def test_warm_shutdown_finishes_the_task_in_flight(worker: Worker, make_job: Any) -> None:
    """SIGTERM while a reflection waits for the LLM: the worker finishes it, then exits."""
    make_job("job-term")
    worker.llm.set_script(script_for(["job-term"], delay=3))
    publish_reflect(
        worker.producer,
        original_job_id="job-term",
        user_id="alice",
        piece_name="default",
        outcome="succeeded",
    )
    deadline = time.monotonic() + 30
    while worker.llm_calls() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(60) == 0
    [row] = worker.rows()
    assert row["outcome"] == "applied"


# --- outages -----------------------------------------------------------------------


class OwnRedis:
    """A redis-server of the test's own (AOF on, like production), restartable at will."""

    def __init__(self, folder: Path, port: int = 6391) -> None:
        self.folder, self.port = folder, port
        self.url = f"redis://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "own redis did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SHUTDOWN: AOF is flushed
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    r.stop()


@pytest.mark.parametrize(
    ("worker_args", "cap"),
    [(("--concurrency", "4"), "4"), (("--pool", "threads", "--concurrency", "8"), "1")],
    ids=["prefork", "threads-with-deferred-runs"],
)
def test_redis_restart_mid_burst_loses_nothing(
    own_redis: OwnRedis,
    worker_env: Callable[..., dict[str, str]],
    make_job: Any,
    pg_engine: Engine,
    tmp_path: Path,
    worker_args: tuple[str, ...],
    cap: str,
) -> None:
    """The broker-and-lock Redis restarts while tasks run: the worker reconnects, every
    task ends applied exactly once.

    With one run per user at a time, the threads worker holds about ten deferred runs
    (countdowns) besides its runs in flight when the broker goes; with kombu's own Redis
    transport it stopped ("Unrecoverable error: AttributeError", tasks/transport.py) in
    each of five runs."""

    def restart() -> None:
        own_redis.stop()
        time.sleep(1)
        own_redis.start()

    burst_through_outage(
        worker_env,
        make_job,
        pg_engine,
        tmp_path,
        restart,
        worker_args=worker_args,
        REFLECTION_BROKER_URL=own_redis.url + "/0",
        REFLECTION_REDIS_URL=own_redis.url + "/1",
        REFLECTION_BROKER_VISIBILITY_TIMEOUT="10",
        REFLECTION_USER_MAX_IN_FLIGHT=cap,
    )


def _pg_cluster() -> tuple[str, str] | None:
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    return (versions[-1], "main") if versions else None


def test_postgres_restart_mid_burst_loses_nothing(
    worker_env: Callable[..., dict[str, str]], make_job: Any, pg_engine: Engine, tmp_path: Path
) -> None:
    """Postgres restarts while tasks run: runs retry, every task ends applied exactly once."""
    cluster = _pg_cluster()
    if cluster is None:
        if IN_CI:
            pytest.fail("pg_ctlcluster is needed to restart Postgres in CI")
        pytest.skip("no local Postgres cluster to restart")

    def ctl(*action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, *action],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def restart() -> None:
        ctl("stop", "-m", "fast")  # live connections are cut, in-flight runs see it
        time.sleep(3)
        ctl("start")

    burst_through_outage(worker_env, make_job, pg_engine, tmp_path, restart)
