"""`reflection doctor`: green when everything is ready, red lines with a fix otherwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kombu.connection import Connection

from reflection.constants import QUEUE_NAME
from reflection.producer import make_producer, publish_reflect
from tests.cli.conftest import Cli
from tests.support import worker as testing_worker

pytestmark = pytest.mark.integration


def test_doctor_all_green(cli: Cli, broker: object) -> None:
    """With every service up, every check is green and the exit code is 0."""
    report = cli.json("doctor")
    assert report["ok"], report
    names = [c["name"] for c in report["checks"]]
    assert names == ["broker", "lock redis", "postgres", "llm", "user folder", "pieces", "workers"]
    table = cli("doctor")
    assert table.exit_code == 0 and "postgres" in table.stdout


def test_doctor_says_when_no_worker_answers(cli: Cli, broker: object) -> None:
    """No worker online is a warning (doctor also runs before the first one starts),
    saying so and how to start one; the exit code stays 0."""
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.output
    workers = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["workers"]
    assert workers["ok"] and workers["warning"]
    assert workers["detail"] == "none answered a ping within 1 s"
    assert "celery -A tasks worker" in workers["fix"]
    assert "none answered" in cli("doctor").stdout


def test_doctor_lists_the_workers_online(cli: Cli, broker: object, tmp_path: Path) -> None:
    """A real worker answers the doctor's ping (`celery inspect ping`) and is named."""
    log = tmp_path / "worker.log"
    proc = testing_worker.start_worker(
        dict(os.environ), log, pool="threads", concurrency=1, name="doctor"
    )
    try:
        workers = {c["name"]: c for c in cli.json("doctor")["checks"]}["workers"]
    finally:
        testing_worker.stop_worker(proc)
    assert workers["ok"] and not workers["warning"], workers
    assert workers["detail"].startswith("1 online: doctor-"), workers


def test_doctor_cannot_ask_workers_without_a_broker(cli: Cli) -> None:
    """With the broker down the workers line is red too, pointing at the broker line."""
    cli.monkeypatch.setenv("REFLECTION_BROKER_URL", "redis://127.0.0.1:1/0")
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["broker"]["ok"] and not checks["workers"]["ok"]
    assert checks["workers"]["fix"] == "see the broker line"


def test_doctor_gives_the_queue_depth_on_rabbitmq(cli: Cli, amqp_broker: str) -> None:
    """On RabbitMQ, as on Redis, the broker line says how many tasks wait; before any
    worker declared the queue, it says so (and declares nothing)."""
    cli.monkeypatch.setenv("REFLECTION_BROKER_URL", amqp_broker)
    producer = make_producer(amqp_broker)
    try:
        publish_reflect(
            producer,
            original_job_id="job-q",
            user_id="alice",
            piece_name="default",
            outcome="succeeded",
        )
    finally:
        producer.close()
    broker = {c["name"]: c for c in cli.json("doctor")["checks"]}["broker"]
    assert broker["ok"] and broker["detail"].endswith("1 task(s) waiting in `reflection`")
    assert "guest:guest" not in broker["detail"]  # the password is hidden
    with Connection(amqp_broker) as conn:
        conn.default_channel.queue_delete(QUEUE_NAME)
    broker = {c["name"]: c for c in cli.json("doctor")["checks"]}["broker"]
    assert broker["ok"] and "no `reflection` queue yet" in broker["detail"]
    with Connection(amqp_broker) as conn, pytest.raises(conn.channel_errors):
        conn.default_channel.queue_declare(QUEUE_NAME, passive=True)


def test_doctor_reports_each_red_line_with_a_fix(cli: Cli) -> None:
    """Postgres down, a refused key, an unknown model and a missing folder are red, each
    with what to do, and the exit code is 1."""
    cli.monkeypatch.setenv("REFLECTION_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    cli.monkeypatch.setenv("REFLECTION_LLM_API_KEY", "sk-wrong-key-000000000000000")
    cli.monkeypatch.setenv("REFLECTION_USER_FOLDER_ROOT", "/nonexistent/users")
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["postgres"]["ok"] and "REFLECTION_DATABASE_URL" in checks["postgres"]["fix"]
    assert not checks["llm"]["ok"] and "REFLECTION_LLM_API_KEY" in checks["llm"]["fix"]
    assert not checks["user folder"]["ok"] and checks["user folder"]["fix"]
    assert checks["lock redis"]["ok"] and checks["pieces"]["ok"]
    assert "Traceback" not in result.output


def test_doctor_unknown_model_is_red(cli: Cli) -> None:
    """A model the endpoint does not list is red and names the served ones."""
    cli.monkeypatch.setenv("REFLECTION_LLM_MODEL", "gpt-nonexistent")
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    assert "scripted-1" in result.stdout and "REFLECTION_LLM_MODEL" in result.stdout
