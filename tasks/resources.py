"""Per-process clients (engine, Redis, LLM client), built lazily after fork.

A prefork child must not inherit its parent's sockets, so nothing is built at import
time; the first task in each process builds them once and reuses them (thread-safe for
the threads pool).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from reflection.clients import worker_deps
from reflection.logs import configure_logging
from reflection.pipeline import Deps
from reflection.settings import get_settings
from reflection.warmup import warm_up

log = logging.getLogger(__name__)
_lock = threading.Lock()
_deps: Deps | None = None
_pid: int | None = None


def get_deps() -> Deps:
    """This process's `Deps`, built on first use."""
    global _deps, _pid
    with _lock:
        if _deps is None or _pid != os.getpid():
            _deps = worker_deps(get_settings())
            _pid = os.getpid()
        return _deps


@worker_init.connect
@worker_process_init.connect
def _init_process(**_: object) -> None:
    s = get_settings()
    # The process's own stderr: in a prefork child Celery has replaced sys.stderr with a
    # proxy that would log each of our lines again, wrapped in a WARNING of its own.
    level = logging.getLevelNamesMapping()[s.log_level]
    configure_logging(s.log_format, level, stream=sys.__stderr__ or sys.stderr)
    # python-redis-lock logs every acquisition at INFO; the run's own line says enough.
    logging.getLogger("redis_lock").setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    )
    try:
        warm_up(s)
    except Exception:  # an optimisation only: the runs build it themselves
        log.warning("warm-up failed; the first runs will be slower", exc_info=True)


@worker_process_shutdown.connect
def _close(**_: object) -> None:
    if _deps is not None:
        _deps.engine.dispose()
        _deps.redis.close()
