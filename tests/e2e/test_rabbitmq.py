"""The worker on a RabbitMQ broker. Redis is the default broker and the one the fault
suite runs on; these show that the task path, the exactly-once effect, the redelivery
of a killed worker's task and a broker restart hold on RabbitMQ as well (README,
Scaling)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.producer import make_producer, publish_reflect
from tests.conftest import IN_CI
from tests.e2e.conftest import (
    API_KEY,
    Worker,
    burst_through_outage,
    check_exactly_once,
    script_for,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.e2e


class OnRabbitMq:
    """Threads-pool workers on the RabbitMQ broker, each stopped at the end of the test."""

    def __init__(
        self, make_env: Callable[..., dict[str, str]], broker: str, engine: Engine, tmp: Path
    ) -> None:
        self.make_env, self.broker, self.engine, self.tmp = make_env, broker, engine, tmp
        self.workers: list[Worker] = []

    def start(self, llm: ScriptedLlmServer, *extra: str) -> Worker:
        env = self.make_env(llm.base_url, REFLECTION_BROKER_URL=self.broker)
        log = self.tmp / "worker.log"
        proc = start_worker(env, log, "--pool", "threads", *extra)
        w = Worker(proc, log, llm, make_producer(self.broker), self.engine, self.tmp / "users")
        self.workers.append(w)
        return w

    def publish(self, w: Worker, job: str, user: str) -> str:
        return publish_reflect(
            w.producer,
            original_job_id=job,
            user_id=user,
            piece_name="default",
            outcome="succeeded",
        )


@pytest.fixture
def rabbitmq(
    worker_env: Callable[..., dict[str, str]], amqp_broker: str, pg_engine: Engine, tmp_path: Path
) -> Iterator[OnRabbitMq]:
    on = OnRabbitMq(worker_env, amqp_broker, pg_engine, tmp_path)
    yield on
    for w in on.workers:
        stop_worker(w.proc)
        w.producer.close()


def test_reflections_on_rabbitmq_land_once(rabbitmq: OnRabbitMq, make_job: Any) -> None:
    """Six jobs of three users on the recommended threads pool, one of them published
    twice: six applied runs and one duplicate, six LLM calls."""
    jobs = {f"rmq-{i}": f"user{i % 3}" for i in range(6)}
    for job, user in jobs.items():
        make_job(job, user_id=user)
    with ScriptedLlmServer(script_for(list(jobs), delay=0.5), require_key=API_KEY) as llm:
        w = rabbitmq.start(llm, "--concurrency", "8")
        for job, user in jobs.items():
            rabbitmq.publish(w, job, user)
        rabbitmq.publish(w, "rmq-0", "user0")
        rows = w.wait_rows(len(jobs) + 1, timeout=60)
        time.sleep(0.5)  # a doubled row would show up now
        outcomes = sorted(r["outcome"] for r in w.rows())
        assert outcomes == ["applied"] * len(jobs) + ["duplicate"], rows
        check_exactly_once(w, jobs)
        assert w.llm_calls() == len(jobs)


def test_killed_worker_task_comes_back_at_once_on_rabbitmq(
    rabbitmq: OnRabbitMq, make_job: Any
) -> None:
    """The whole worker dies (SIGKILL) while its run waits on the LLM. RabbitMQ requeues
    the unacknowledged task when the connection drops, with no visibility timeout to
    wait out (Redis' is an hour here): the next worker finishes it, once."""
    make_job("rmq-kill")
    with ScriptedLlmServer(script_for(["rmq-kill"], delay=4), require_key=API_KEY) as llm:
        w = rabbitmq.start(llm)
        task_id = rabbitmq.publish(w, "rmq-kill", "alice")
        deadline = time.monotonic() + 30
        while w.llm_calls() == 0:
            assert time.monotonic() < deadline, w.log.read_text()[-3000:]
            time.sleep(0.05)
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait()
        llm.set_script(script_for(["rmq-kill"]))
        rabbitmq.start(llm).wait_rows(1, timeout=30)
        time.sleep(0.5)
        assert [(r["reflection_job_id"], r["outcome"]) for r in w.rows()] == [(task_id, "applied")]
        check_exactly_once(w, {"rmq-kill": "alice"})
        assert w.llm_calls() == 2  # the killed run's answer never arrived


@pytest.mark.parametrize("cap", ["4", "1"], ids=["threads", "threads-with-deferred-runs"])
def test_rabbitmq_restart_mid_burst_loses_nothing(
    worker_env: Callable[..., dict[str, str]],
    amqp_broker: str,
    make_job: Any,
    pg_engine: Engine,
    tmp_path: Path,
    cap: str,
) -> None:
    """RabbitMQ restarts (its application stopped and started, as in an upgrade) while
    the recommended threads pool has runs in flight (and, with one run per user at a
    time, deferred runs held as countdowns): the worker reconnects, takes the requeued
    and the waiting tasks, and every job ends applied exactly once.

    The rest of the burst takes a few seconds. With Celery's prefetch reduction after a
    reconnect on (celeryconfig.py, `worker_enable_prefetch_count_reduction`), this
    worker took two tasks and then stalled, the rest of the queue ready, in six of
    eight runs."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is needed to restart RabbitMQ in CI")
        pytest.skip("no rabbitmqctl to restart RabbitMQ with")

    def restart() -> None:
        subprocess.run([ctl, "-q", "stop_app"], check=True, capture_output=True, timeout=60)
        time.sleep(1)
        subprocess.run([ctl, "-q", "start_app"], check=True, capture_output=True, timeout=60)

    burst_through_outage(
        worker_env,
        make_job,
        pg_engine,
        tmp_path,
        restart,
        worker_args=("--pool", "threads", "--concurrency", "8"),
        recover_within=60,
        REFLECTION_BROKER_URL=amqp_broker,
        REFLECTION_USER_MAX_IN_FLIGHT=cap,
    )
