"""The worker's Prometheus endpoint: every worker process serves REFLECTION_METRICS_PORT
(SPEC §13, §14; the metrics are `reflection.metrics`).

A prefork worker's parent serves the sum of what its children record: before its pool
forks, it points prometheus_client's multiprocess mode at a directory of its own, made
empty at start (`reflection-metrics-*` under $TMPDIR) and removed at shutdown; a child
that exits has its live gauges dropped, its counters stay in the sums. A threads or solo
worker serves its own registry. A second worker process on one host finds the port
taken and serves the next free one, up to `PORT_TRIES` higher; each logs the port it
serves. `REFLECTION_METRICS_PORT=0` serves nothing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
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

from reflection import metrics
from reflection.settings import get_settings

log = logging.getLogger(__name__)

PORT_TRIES = 16  # one worker process per core: room for a large host's processes

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
    _endpoint = metrics.serve(s.metrics_addr, s.metrics_port, PORT_TRIES)


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
