"""The worker's Redis transport (tasks/transport.py) on the real Redis."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection

from tasks.transport import RedisTransport, transport_for
from tests.conftest import TEST_BROKER_URL

pytestmark = pytest.mark.integration


def test_the_worker_uses_it_on_redis_urls_only() -> None:
    assert transport_for("redis://h:6379/0") == "tasks.transport:RedisTransport"
    assert transport_for("rediss://:pw@h:6380/0") == "tasks.transport:RedisTransport"
    assert transport_for("amqp://guest:guest@h:5672//") is None
    assert transport_for("sentinel://h:26379") is None


@pytest.mark.usefixtures("redis_client")  # fails (CI) or skips when Redis is down
def test_a_channel_of_a_closed_connection_fails_as_a_connection_error() -> None:
    """kombu detaches a closed connection from its transport; a channel asked for a
    client afterwards (to put back its unacknowledged tasks) raised AttributeError,
    which stopped the worker. It now raises a connection error, which Celery ignores."""
    with Connection(TEST_BROKER_URL, transport=transport_for(TEST_BROKER_URL)) as conn:
        assert isinstance(conn.transport, RedisTransport)
        channel = conn.channel()
        assert channel.client.ping()  # a working channel first
        channel._disconnect_pools()
        conn.transport.client = None
        with pytest.raises(redis.ConnectionError, match="already closed"):
            channel._create_client()
        assert isinstance(redis.ConnectionError(), conn.transport.connection_errors)
