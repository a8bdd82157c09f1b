"""The worker's Prometheus endpoint: every worker process serves REFLECTION_METRICS_PORT
(SPEC §13, §14; the metrics are `reflection.metrics`).

A prefork worker's parent serves the sum of what its children record: before its pool
forks, it points prometheus_client's multiprocess mode at a directory of its own, made
empty at start (`reflection-metrics-*` under $TMPDIR) and removed at shutdown; a child
that exits has its live gauges dropped, its counters stay in the sums. A threads or solo
worker serves its own registry. A second worker process on one host finds the port
taken and serves the next free one, up to `PORT_TRIES` higher; each logs the port it
serves. `REFLECTION_METRICS_PORT=0` serves nothing.

Each endpoint also reports `reflection_queue_length`, the tasks waiting in the queue,
asked of the broker at each scrape (every worker reports the same number: alert on its
max), so that a backlog can be alerted on without a broker exporter.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from celery import concurrency
from celery.concurrency import prefork
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from reflection import metrics
from reflection.constants import QUEUE_NAME
from reflection.settings import get_settings

log = logging.getLogger(__name__)

PORT_TRIES = 16  # one worker process per core: room for a large host's processes
QUEUE_TIMEOUT_SECONDS = 2.0  # a scrape must not hang on a broker that is down

_endpoint: metrics.Endpoint | None = None
_dir: str | None = None


def forks_children(pool: Any) -> bool:
    """Whether a worker with this `--pool` runs its tasks in child processes."""
    return issubclass(concurrency.get_implementation(pool), prefork.TaskPool)


@worker_init.connect
def _start(sender: Any, **_: object) -> None:
    global _endpoint, _dir
    s = get_settings()
    if s.metrics_port == 0:
        return
    if forks_children(sender.pool_cls):
        _dir = tempfile.mkdtemp(prefix="reflection-metrics-")
        metrics.use_multiprocess_dir(_dir)
    queue = QueueLength(sender.app)
    _endpoint = metrics.serve(s.metrics_addr, s.metrics_port, PORT_TRIES, [queue])


def queue_depth(app: Any) -> int | None:
    """The tasks waiting in the reflection queue, as the broker counts them (0 before a
    worker declared it); None when the broker cannot be asked."""
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=QUEUE_TIMEOUT_SECONDS)
            try:
                declared = conn.default_channel.queue_declare(QUEUE_NAME, passive=True)
            except conn.channel_errors:
                return 0
            return int(declared.message_count)
    except Exception as e:  # a scrape reports what it can
        log.debug("cannot ask the broker how many tasks wait: %s", e)
        return None


class QueueLength:
    """`reflection_queue_length`, read from the broker at each scrape."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return []  # nothing to ask the broker at registration

    def collect(self) -> Iterator[Metric]:
        depth = queue_depth(self.app)
        if depth is not None:
            yield GaugeMetricFamily(
                "reflection_queue_length",
                "Tasks waiting in the reflection queue, as the broker counts them",
                value=depth,
            )


@worker_ready.connect
def _announce(**_: object) -> None:
    # Said once Celery's logging is set up (at worker_init it is not yet).
    s = get_settings()
    if s.metrics_port == 0:
        return
    if _endpoint is None:
        log.error(
            "no Prometheus metrics: ports %d to %d are all taken (REFLECTION_METRICS_PORT)",
            s.metrics_port,
            s.metrics_port + PORT_TRIES - 1,
        )
        return
    log.info(
        "serving Prometheus metrics on %s:%d%s",
        s.metrics_addr,
        _endpoint.port,
        " (the children's, through a multiprocess directory)" if _dir else "",
        extra={"metrics_port": _endpoint.port},
    )


@worker_process_init.connect
def _in_child(**_: object) -> None:
    # A forked child holds a copy of the parent's listening socket; only the parent
    # serves (its thread did not come along), so the child lets go of it.
    if _endpoint is not None:
        _endpoint.server.socket.close()


@worker_process_shutdown.connect
def _child_exit(pid: int, **_: object) -> None:
    metrics.mark_process_dead(pid)


@worker_shutdown.connect
def _stop(**_: object) -> None:
    global _endpoint, _dir
    if _endpoint is not None:
        _endpoint.close()
        _endpoint = None
    if _dir is not None:
        shutil.rmtree(_dir, ignore_errors=True)
        _dir = None
