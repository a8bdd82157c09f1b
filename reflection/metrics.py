"""Prometheus metrics of the runs (SPEC §13, §14), recorded where they happen and served
by every worker process on REFLECTION_METRICS_PORT (`tasks.exporter`).

    metric                                 type       labels
    reflection_runs_total                  counter    kind, outcome, error_code ('' unless failed)
    reflection_changes_total               counter    op (add, update, remove, edit), accepted, code
    reflection_llm_tokens_total            counter    direction (in, out, cached)
    reflection_run_duration_seconds        histogram  claim to outcome, per run that ended
    reflection_llm_duration_seconds        histogram  the LLM stage of a run (retries included)
    reflection_lock_wait_seconds           histogram  asking for a user lock until held or given up
    reflection_runs_in_progress            gauge      runs in progress (of all prefork children)
    reflection_task_deferrals_total        counter    reason (user_busy, llm_outage, coalescing)
    reflection_task_retries_total          counter    code
    reflection_queue_length                gauge      tasks waiting in the queue (at each scrape)

A run is counted once, where it ends (`record_run`, from the pipeline's report): its
outcome, its changes, its tokens and its durations. A retry or a deferral is no end:
the task counts those (`record_retry`, `record_deferral`).

Every process records into its own instruments, built on first use rather than at
import: a prefork worker switches to prometheus_client's multiprocess mode
(`use_multiprocess_dir`) once it knows its pool, before its children fork, and its
parent then serves what every child wrote (`registry_to_serve`). A threads or solo
worker serves its own registry, with the process collectors (memory, CPU, open files).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from reflection.models import Usage, Verdict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
KIND_REFLECTION = "reflection"
KIND_CONSOLIDATION = "consolidation"
# Seconds. A run is mostly its LLM call (a second or two, up to the soft time limit);
# a lock wait is short unless another run of the user holds it (up to the lock wait).
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 900)
LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 900)
LOCK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8)


@dataclass(frozen=True)
class _Instruments:
    runs: Counter
    changes: Counter
    tokens: Counter
    run_seconds: Histogram
    llm_seconds: Histogram
    lock_wait: Histogram
    in_progress: Gauge
    deferrals: Counter
    retries: Counter


_built: _Instruments | None = None
_build_lock = threading.Lock()  # a threads pool's first runs all ask at once


def _instruments() -> _Instruments:
    """This process's instruments, built once (a second registration of a name would
    fail), in the mode chosen before the first of them."""
    global _built
    if _built is None:
        with _build_lock:
            if _built is None:
                _built = _build()
    return _built


def _build() -> _Instruments:
    return _Instruments(
        runs=Counter(
            "reflection_runs_total",
            "Runs that ended, by kind, outcome and error code",
            ["kind", "outcome", "error_code"],
        ),
        changes=Counter(
            "reflection_changes_total",
            "Proposed changes judged, by op, whether accepted, and code",
            ["op", "accepted", "code"],
        ),
        tokens=Counter(
            "reflection_llm_tokens_total",
            "LLM tokens of the runs that ended: in, out, and of in, cached",
            ["direction"],
        ),
        run_seconds=Histogram(
            "reflection_run_duration_seconds", "How long a run took", buckets=RUN_BUCKETS
        ),
        llm_seconds=Histogram(
            "reflection_llm_duration_seconds",
            "How long a run's LLM stage took, its retries included",
            buckets=LLM_BUCKETS,
        ),
        lock_wait=Histogram(
            "reflection_lock_wait_seconds",
            "How long a user lock was waited for, until held or given up",
            buckets=LOCK_BUCKETS,
        ),
        in_progress=Gauge(
            "reflection_runs_in_progress",
            "Runs in progress in this worker",
            multiprocess_mode="livesum",
        ),
        deferrals=Counter(
            "reflection_task_deferrals_total",
            "Runs re-sent for later without counting a retry, by reason",
            ["reason"],
        ),
        retries=Counter(
            "reflection_task_retries_total", "Runs retried by the task, by code", ["code"]
        ),
    )


def change_labels(verdict: Verdict) -> tuple[str, str, str]:
    """A judged change's labels on `reflection_changes_total`: op, accepted, code."""
    return verdict.op, "true" if verdict.accepted else "false", verdict.code.value


def token_counts(usage: Usage) -> tuple[tuple[str, int], ...]:
    """`usage` by direction, as `reflection_llm_tokens_total` counts it."""
    return (("in", usage.tokens_in), ("out", usage.tokens_out), ("cached", usage.tokens_cached))


def record_run(
    *,
    kind: str,
    outcome: str,
    error_code: str | None,
    seconds: float,
    usage: Usage,
    llm_seconds: float | None = None,
    verdicts: Sequence[Verdict] = (),
) -> None:
    """Count one run that ended: its outcome, its judged changes, its tokens, its
    duration and (when it asked the LLM) its LLM stage's duration."""
    m = _instruments()
    m.runs.labels(kind, outcome, error_code or "").inc()
    for verdict in verdicts:
        m.changes.labels(*change_labels(verdict)).inc()
    for direction, count in token_counts(usage):
        if count:
            m.tokens.labels(direction).inc(count)
    m.run_seconds.observe(seconds)
    if llm_seconds is not None:
        m.llm_seconds.observe(llm_seconds)


def observe_lock_wait(seconds: float) -> None:
    """Note how long a user lock was waited for (held at once: about 0)."""
    _instruments().lock_wait.observe(seconds)


def record_deferral(reason: str) -> None:
    """Count a run re-sent for later without a retry (`user_busy`, `llm_outage`)."""
    _instruments().deferrals.labels(reason).inc()


def record_retry(code: str) -> None:
    """Count a run the task retries, by the code of what stopped it."""
    _instruments().retries.labels(code).inc()


@contextmanager
def in_progress() -> Iterator[None]:
    """Count the block as a run in progress."""
    gauge = _instruments().in_progress
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


# Serving (the worker's side, `tasks.exporter`).


def use_multiprocess_dir(path: str) -> None:
    """Record into files under `path` from now on, in this process and in those it forks
    (prometheus_client's multiprocess mode), so that one process can serve them all.

    prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, at import, to choose how its
    values are stored; a worker knows its pool only later, so it asks the library again
    here. Call it before this process records anything."""
    if _built is not None:
        raise RuntimeError("metrics were recorded before the multiprocess mode was chosen")
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()


def multiprocess_dir() -> str | None:
    """The multiprocess directory in use, or None (this process serves its own)."""
    return os.environ.get(MULTIPROC_ENV)


def registry_to_serve() -> CollectorRegistry:
    """What this process serves: every process's files in multiprocess mode, else its
    own registry (with the process and platform collectors)."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def mark_process_dead(pid: int) -> None:
    """Forget a dead process's live gauges (its counters stay in the sums)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)


def candidate_ports(port: int, tries: int) -> Iterable[int]:
    """The ports a process tries in turn: `port`, then the next ones up (a second
    worker process on the host takes the next free port)."""
    return range(port, min(port + tries, 65536))


@dataclass(frozen=True)
class Endpoint:
    """A running metrics endpoint: where it listens; `close()` stops it."""

    server: WSGIServer
    port: int

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()


def serve(
    addr: str, port: int, tries: int, collectors: Iterable[Collector] = ()
) -> Endpoint | None:
    """Serve `registry_to_serve()`, with `collectors` added, over HTTP on the first free
    port of `candidate_ports(port, tries)`; None when every one is taken."""
    registry = registry_to_serve()
    for collector in collectors:
        registry.register(collector)
    for candidate in candidate_ports(port, tries):
        try:
            server, _ = start_http_server(candidate, addr=addr, registry=registry)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            continue
        return Endpoint(server, candidate)
    return None
