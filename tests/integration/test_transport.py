"""The worker's Redis transport (tasks/transport.py) on the real Redis."""

from __future__ import annotations

import pytest
import redis
from kombu.connection import Connection

from tasks.app import app
from tasks.transport import RedisTransport
from tests.conftest import TEST_AMQP_URL, TEST_BROKER_URL

pytestmark = pytest.mark.integration


def test_the_worker_uses_it_on_redis_urls_only() -> None:
    """However the URL reaches the app (the bench sets `app.conf.broker_url`)."""
    for url in (TEST_BROKER_URL, "rediss://:pw@h:6380/0", "redis://h:6379/0"):
        assert isinstance(Connection(url).transport, RedisTransport)
    assert not isinstance(Connection(TEST_AMQP_URL).transport, RedisTransport)
    assert not isinstance(Connection("sentinel://h:26379").transport, RedisTransport)
    conf = app.conf.broker_url
    try:
        app.conf.broker_url = TEST_AMQP_URL
        assert not isinstance(app.connection_for_read().transport, RedisTransport)
        app.conf.broker_url = TEST_BROKER_URL
        assert isinstance(app.connection_for_read().transport, RedisTransport)
    finally:
        app.conf.broker_url = conf


@pytest.mark.usefixtures("redis_client")  # fails (CI) or skips when Redis is down
def test_a_channel_of_a_closed_connection_fails_as_a_connection_error() -> None:
    """kombu detaches a closed connection from its transport; a channel asked for a
    client afterwards (to put back its unacknowledged tasks) raised AttributeError,
    which stopped the worker. It now raises a connection error, which Celery ignores."""
    with Connection(TEST_BROKER_URL) as conn:
        assert isinstance(conn.transport, RedisTransport)
        channel = conn.channel()
        assert channel.client.ping()  # a working channel first
        channel._disconnect_pools()
        conn.transport.client = None
        with pytest.raises(redis.ConnectionError, match="already closed"):
            channel._create_client()
        assert isinstance(redis.ConnectionError(), conn.transport.connection_errors)
