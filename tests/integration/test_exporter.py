"""The queue length each worker's metrics endpoint reports, asked of the real broker."""

from __future__ import annotations

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

from reflection.producer import make_producer, publish_reflect
from tasks.exporter import QueueLength, queue_depth
from tests.conftest import TEST_BROKER_URL
from tests.support.broker import empty_broker

pytestmark = pytest.mark.integration


def _publish(app: Celery, job: str) -> None:
    publish_reflect(
        app,
        original_job_id=job,
        user_id="alice",
        piece_name="default",
        outcome="succeeded",
    )


def test_the_queue_length_is_the_brokers_count(redis_client: object) -> None:
    """No queue yet: 0. Two tasks published and none taken: 2, in the exposition too."""
    empty_broker(TEST_BROKER_URL)
    app = make_producer(TEST_BROKER_URL)
    try:
        assert queue_depth(app) == 0
        _publish(app, "job-q1")
        _publish(app, "job-q2")
        assert queue_depth(app) == 2
        registry = CollectorRegistry()
        registry.register(QueueLength(app))
        assert b"reflection_queue_length 2.0" in generate_latest(registry)
    finally:
        app.close()


def test_a_broker_that_is_down_leaves_the_gauge_out() -> None:
    """A scrape while the broker is down does not hang or fail: the gauge is left out."""
    app = make_producer("redis://127.0.0.1:1/0")
    try:
        assert queue_depth(app) is None
        registry = CollectorRegistry()
        registry.register(QueueLength(app))
        assert b"reflection_queue_length" not in generate_latest(registry)
    finally:
        app.close()
