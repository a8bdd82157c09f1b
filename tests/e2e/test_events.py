"""What Flower sees: the task events of a real worker, read off the real broker.

The README's worker command has `-E`, so its runs show in Flower's Tasks tab. Without
it a worker sends no task events until Flower (or `celery control enable_events`) turns
them on: the worker does not pay for events nobody reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine

from reflection.constants import USER_SLOTS_PREFIX
from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.producer import make_producer, publish_reflect
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, script_for
from tests.support import worker as testing_worker

pytestmark = pytest.mark.e2e

TASK_EVENTS = ("task-received", "task-started", "task-succeeded")


class EventLog:
    """Every event on the broker's event exchange, as Flower's receiver gets them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []
        self._receiver: Any = None
        self._ready = threading.Event()

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.seen.append(event)

    def of(self, task_id: str) -> list[str]:
        return [e["type"] for e in list(self.seen) if e.get("uuid") == task_id]

    def wait_for(self, task_id: str, types: tuple[str, ...], timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not set(types) <= set(self.of(task_id)):
            time.sleep(0.05)
        return self.of(task_id)

    @contextmanager
    def running(self) -> Iterator[EventLog]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        assert self._ready.wait(10)
        # Fanout events sent before the receiver subscribed are gone: wait until one of
        # our own comes back.
        with self.app.connection_for_write() as conn:
            dispatcher = self.app.events.Dispatcher(conn, hostname="e2e-probe")
            deadline = time.monotonic() + 10
            while not any(e["type"] == "worker-probe" for e in list(self.seen)):
                assert time.monotonic() < deadline, "the event receiver never subscribed"
                dispatcher.send("worker-probe")
                time.sleep(0.1)
        try:
            yield self
        finally:
            self._receiver.should_stop = True
            thread.join(5)


@pytest.fixture
def events_worker(
    worker_env: Callable[..., dict[str, str]], pg_engine: Engine, tmp_path: Path
) -> Iterator[Callable[..., tuple[Worker, EventLog]]]:
    """Start a threads-pool worker with extra arguments; yield it with an event log."""
    with ExitStack() as stack:

        def start(*extra: str) -> tuple[Worker, EventLog]:
            script = script_for(["ev-1", "ev-2"])
            llm = stack.enter_context(ScriptedLlmServer(script, require_key=API_KEY))
            log = tmp_path / "worker.log"
            proc = testing_worker.start_worker(
                worker_env(llm.base_url),
                log,
                *extra,
                pool="threads",
                concurrency=4,
                name="events",
            )
            stack.callback(testing_worker.stop_worker, proc)
            producer = make_producer(TEST_BROKER_URL)
            stack.callback(producer.close)
            events = stack.enter_context(EventLog(producer).running())
            return Worker(proc, log, llm, producer, pg_engine, tmp_path / "users"), events

        yield start


def publish(w: Worker, job_id: str) -> str:
    return publish_reflect(
        w.producer,
        original_job_id=job_id,
        user_id="alice",
        piece_name="default",
        outcome="succeeded",
    )


def test_the_readme_worker_command_sends_task_events(
    events_worker: Callable[..., tuple[Worker, EventLog]], make_job: Any
) -> None:
    w, events = events_worker("-E")
    make_job("ev-1")
    task_id = publish(w, "ev-1")
    [row] = w.wait_rows(1)
    assert row["outcome"] == "applied"
    assert set(TASK_EVENTS) <= set(events.wait_for(task_id, TASK_EVENTS))
    [received] = [e for e in events.seen if e["type"] == "task-received"]
    assert received["name"] == "reflect"
    assert API_KEY not in repr(events.seen), "the API key reached a task event"


def test_a_failed_run_is_a_task_failed_event_acknowledged_and_not_retried(
    events_worker: Callable[..., tuple[Worker, EventLog]],
) -> None:
    """A reflect for a job that does not exist ends in FAILURE after its metrics row: a
    `task-failed` event whose exception names `job_not_found` (Flower's failed tasks), no
    retry, and the message acknowledged (nothing left in the queue or unacked)."""
    w, events = events_worker("-E")
    task_id = publish(w, "no-such-job")
    [row] = w.wait_rows(1)
    assert (row["outcome"], row["error_code"]) == ("failed", "job_not_found")
    seen = events.wait_for(task_id, ("task-failed",))
    assert "task-failed" in seen and "task-succeeded" not in seen, seen
    assert "task-retried" not in seen
    [failed] = [e for e in events.seen if e["type"] == "task-failed"]
    assert "ReflectionFailed" in failed["exception"] and "job_not_found" in failed["exception"]
    assert failed["traceback"]  # Celery's event carries one; the log line does not
    log = w.log.read_text()
    assert "raised expected: ReflectionFailed('job_not_found: " in log
    assert "Traceback" not in log
    broker = redis.Redis.from_url(TEST_BROKER_URL)
    try:
        deadline = time.monotonic() + 10
        while broker.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (broker.llen("reflection"), broker.hlen("unacked")) == (0, 0)
    finally:
        broker.close()
    time.sleep(1)  # a retry would have been published at once
    assert len(w.rows()) == 1 and events.of(task_id).count("task-received") == 1


def test_without_e_no_task_events_until_flower_turns_them_on(
    events_worker: Callable[..., tuple[Worker, EventLog]], make_job: Any
) -> None:
    w, events = events_worker()
    make_job("ev-1")
    make_job("ev-2")
    quiet = publish(w, "ev-1")
    w.wait_rows(1)
    time.sleep(1)  # task-succeeded is sent after the row is committed
    assert events.of(quiet) == []
    # What Flower sends every 5 s (its --enable_events, on by default).
    assert w.producer.control.enable_events(reply=True, timeout=5)
    watched = publish(w, "ev-2")
    w.wait_rows(2)
    assert set(TASK_EVENTS) <= set(events.wait_for(watched, TASK_EVENTS))


def test_a_deferred_run_shows_as_retried_and_sends_no_task_sent_event(
    events_worker: Callable[..., tuple[Worker, EventLog]],
    make_job: Any,
    redis_client: redis.Redis,
) -> None:
    """A run whose user is at its cap shows in Flower as retried, with the reason, and
    then runs. Its re-send publishes no `task-sent` event, as the platform's publishes
    send none: one more publish per deferral that nobody asked for (README, Scaling)."""
    w, events = events_worker("-E")
    make_job("ev-1")
    slots = USER_SLOTS_PREFIX + "alice"
    redis_client.zadd(slots, {f"other-{i}": time.time() for i in range(4)})  # the default cap
    task_id = publish(w, "ev-1")
    seen = events.wait_for(task_id, ("task-retried",))
    assert "task-retried" in seen, seen
    [retried] = [e for e in events.seen if e["type"] == "task-retried"]
    assert "reflections in flight; deferred" in retried["exception"]
    redis_client.delete(slots)
    [row] = w.wait_rows(1, timeout=30)
    assert row["outcome"] == "applied"
    seen = events.wait_for(task_id, ("task-succeeded",))
    assert "task-succeeded" in seen and "task-sent" not in seen, seen
    assert "deferred" in w.log.read_text()
