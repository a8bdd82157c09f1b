"""A real worker's Prometheus endpoint after real runs (applied, rejected, failed): a
prefork worker's parent serves what its two children recorded, a threads worker serves
its own, and a second worker on the host serves the next port."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.producer import make_producer
from tests.conftest import TEST_BROKER_URL
from tests.e2e.conftest import API_KEY, Worker, entry, start_worker, stop_worker

pytestmark = pytest.mark.e2e

APPLIED = [f"m-ok-{i}" for i in range(4)]
REJECTED = "m-rejected"
MISSING = "m-missing"  # no such job: failed, job_not_found
_SERVING = re.compile(r"serving Prometheus metrics on [\d.]+:(\d+)")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _script() -> dict[str, Any]:
    bad = {
        "reasoning": "bad name",
        "memory_changes": [{**entry(REJECTED)["memory_changes"][0], "name": "Bad Name"}],
        "piece_edit": None,
    }
    # Half a second per answer, so that runs overlap and both prefork children take some.
    rules = [
        {"match": f"job id: {j}\n", "replies": [{"content": entry(j), "delay": 0.5}]}
        for j in APPLIED
    ]
    rules.append({"match": f"job id: {REJECTED}\n", "replies": [{"content": bad}]})
    return {"rules": rules}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_port(log: Path) -> int:
    """The port the worker says it serves its metrics on."""
    found = _SERVING.findall(log.read_text())
    assert len(found) == 1, log.read_text()[-3000:]
    return int(found[0])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_worker(
    worker_env: Callable[..., dict[str, str]], pg_engine: Engine, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    """Start workers on one scripted LLM, all asked to serve the same metrics port."""
    port = free_port()
    with ExitStack() as stack:
        llm = stack.enter_context(ScriptedLlmServer(_script(), require_key=API_KEY))
        producer = make_producer(TEST_BROKER_URL)
        stack.callback(producer.close)

        def start(*extra: str, name: str = "worker") -> Worker:
            log = tmp_path / f"{name}.log"
            env = worker_env(llm.base_url, REFLECTION_METRICS_PORT=str(port))
            proc = start_worker(env, log, *extra)
            stack.callback(stop_worker, proc)
            return Worker(proc, log, llm, producer, pg_engine, tmp_path / "users")

        yield start


def _run_all(w: Worker, make_job: Any) -> None:
    for job in [*APPLIED, REJECTED]:
        make_job(job)
    for job in [*APPLIED, REJECTED, MISSING]:
        w.publish(job)
    rows = w.wait_rows(len(APPLIED) + 2)
    assert sorted(r["outcome"] for r in rows) == ["applied"] * 4 + ["failed", "rejected"]


def _check_counts(samples: Samples) -> None:
    runs = "reflection_runs_total"
    assert value(samples, runs, kind="reflection", outcome="applied", error_code="") == 4
    assert value(samples, runs, kind="reflection", outcome="rejected", error_code="") == 1
    failed = {"kind": "reflection", "outcome": "failed", "error_code": "job_not_found"}
    assert value(samples, runs, **failed) == 1
    changes = "reflection_changes_total"
    assert value(samples, changes, op="add", accepted="true", code="ok") == 4
    assert value(samples, changes, op="add", accepted="false", code="invalid_name") == 1
    tokens = "reflection_llm_tokens_total"
    assert (
        value(samples, tokens, direction="in") > 0 and value(samples, tokens, direction="out") > 0
    )
    assert value(samples, "reflection_run_duration_seconds_count") == 6
    assert value(samples, "reflection_llm_duration_seconds_count") == 5  # not the missing job
    assert value(samples, "reflection_lock_wait_seconds_count") >= 5
    assert value(samples, "reflection_runs_in_progress") == 0
    assert samples[("reflection_queue_length", frozenset())] == 0  # asked of the broker


def test_a_prefork_worker_serves_what_its_children_recorded(
    metrics_worker: Callable[..., Worker], make_job: Any
) -> None:
    """Prefork, concurrency 2: the parent serves the sum of both children's counts (the
    multiprocess directory), with the SPEC's names and labels."""
    w = metrics_worker("--pool", "prefork", "--concurrency", "2")
    _run_all(w, make_job)
    pids = set(re.findall(r"ForkPoolWorker-(\d+)", w.log.read_text()))
    samples = scrape(served_port(w.log))
    _check_counts(samples)
    assert "through a multiprocess directory" in w.log.read_text()
    assert len(pids) == 2, "both children should have run tasks"
    assert value(samples, "process_resident_memory_bytes") == 0  # no per-process collector


def test_a_threads_worker_serves_its_own_and_a_second_worker_the_next_port(
    metrics_worker: Callable[..., Worker], make_job: Any
) -> None:
    """A threads worker serves its own registry (process collectors included); a second
    worker process asked for the same port serves the next free one."""
    w = metrics_worker("--pool", "threads", "--concurrency", "4")
    _run_all(w, make_job)
    port = served_port(w.log)
    samples = scrape(port)
    _check_counts(samples)
    assert value(samples, "process_resident_memory_bytes") > 0
    second = metrics_worker("--pool", "threads", "--concurrency", "2", name="second")
    assert served_port(second.log) == port + 1
    assert value(scrape(port + 1), "reflection_runs_total", **{
        "kind": "reflection", "outcome": "applied", "error_code": ""
    }) == 0  # fmt: skip
