"""kombu's Redis transport, with a worker that survives losing its broker.

When the worker loses the broker, Celery closes the connection twice (`collect()`, then
`close()`), and each close of the channel puts back the tasks it had delivered but not
acknowledged: runs in flight and runs deferred with a countdown. While Redis is down
the first attempt fails and kombu detaches the connection from the transport; the
second then failed with an AttributeError, which Celery does not expect there, and the
whole worker stopped ("Unrecoverable error"). Here the second attempt fails as what it
is, a connection error, which Celery ignores: the worker reconnects, and those tasks
come back after the visibility timeout, as a killed worker's do.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES, _transport_cache
from kombu.transport import redis as kombu_redis


class _Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is already closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class RedisTransport(kombu_redis.Transport):
    Channel = _Channel


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use `RedisTransport` in this process,
    however the URL is given (settings, `celery -b`, `app.conf.broker_url`)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:RedisTransport"
        _transport_cache.pop(scheme, None)  # kombu caches a resolved alias
