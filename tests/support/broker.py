"""Empty a broker's reflection queue before a test or a benchmark run."""

from __future__ import annotations

import redis

from reflection.constants import QUEUE_NAME
from reflection.producer import make_producer


def empty_broker(url: str) -> None:
    """A Redis broker's whole database is flushed (its unacknowledged messages too);
    on any other broker (RabbitMQ) the reflection queue is declared as the workers
    declare it and purged."""
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
        return
    with make_producer(url).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        channel = conn.default_channel
        channel.queue_declare(QUEUE_NAME, durable=True, auto_delete=False)
        channel.queue_purge(QUEUE_NAME)
