"""The `reflect` task as a raw Celery message (protocol 2, JSON), standard library only.

For a platform that does not run Celery: copy this one file, it imports nothing from the
worker, from Celery or from any other package (`reflection.producer` is the Celery way).
Other languages build the same dictionaries (README, "The task message").

- Redis broker: `LPUSH reflection <redis_envelope(...)>` on the broker's database.
- RabbitMQ: publish `parts(...).body` to the default exchange (`""`) with routing key
  `reflection`, content type `application/json`, encoding `utf-8`, persistent, with
  `parts(...).headers` as the AMQP headers and `parts(...).properties`' ids.

The worker validates the kwargs; a bad one ends the run `failed` with a code (README).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

TASK = "reflect"
QUEUE = "reflection"


@dataclass(frozen=True)
class Parts:
    """A message's body (the JSON bytes), its headers and its properties."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]


def parts(
    *,
    original_job_id: str,
    user_id: str,
    piece_name: str,
    outcome: str,
    task_id: str | None = None,
) -> Parts:
    """The message for one finished job; `task_id` (a new UUID by default) becomes the
    reflection job id."""
    tid = task_id or str(uuid.uuid4())
    kwargs = {
        "original_job_id": original_job_id,
        "user_id": user_id,
        "piece_name": piece_name,
        "outcome": outcome,
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    headers = {
        "lang": "py",  # the protocol's name for "Celery protocol 2", whatever the language
        "task": TASK,
        "id": tid,
        "root_id": tid,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "()",
        "kwargsrepr": repr(kwargs),
        "origin": f"{os.getpid()}@{socket.gethostname()}",
    }
    properties = {"correlation_id": tid, "reply_to": "", "delivery_mode": 2, "priority": 0}
    body = json.dumps([[], kwargs, embed]).encode("utf-8")
    return Parts(body, headers, properties)


def redis_envelope(**kwargs: Any) -> str:
    """The JSON document to `LPUSH` onto the `reflection` list of a Redis broker (the
    same keyword arguments as `parts`)."""
    p = parts(**kwargs)
    return json.dumps(
        {
            "body": base64.b64encode(p.body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": p.headers,
            "properties": {
                **p.properties,
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
