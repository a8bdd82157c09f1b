"""The LLM circuit breaker on the real Redis, around real runs against the scripted LLM:
an outage opens it and defers the run, others defer without calling, one probe at a
time, a successful probe closes it, and a run past its window fails `llm_unavailable`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

from reflection.breaker import WAIT, llm_guard
from reflection.constants import LLM_BREAKER_KEY, LLM_OUTAGE_SINCE_PREFIX, LLM_PROBE_KEY
from reflection.errors import LlmOutageError
from reflection.models import Outcome
from tests.integration.conftest import Env, decision
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

DOWN = {"status": 503, "error": "upstream unavailable"}
ADD = {
    "op": "add",
    "evidence": EVIDENCE,
    "name": "prefers-pytest",
    "description": "Wants pytest",
    "type": "feedback",
    "body": "Use pytest fixtures.",
}
LEARNED = {"content": decision("learned", [ADD])}


def _open_with_probe_taken(r: redis.Redis, holder: str = "another-run") -> None:
    r.set(LLM_BREAKER_KEY, repr(time.time()))
    r.set(LLM_PROBE_KEY, holder, ex=60)


def test_an_outage_opens_the_breaker_and_defers_the_run(
    env: Env, make_job: object, redis_client: redis.Redis
) -> None:
    """Every attempt failing with 503 opens the breaker and defers the run (a retry
    nobody counts), with no metrics row: the run has not ended."""
    env.settings(llm_outage_probe_seconds=30)
    make_job("job-1")  # type: ignore[operator]
    env.script("job-1", DOWN)
    with pytest.raises(LlmOutageError) as deferred:
        env.run("job-1", reflection_job_id="r-1")
    assert 24 <= deferred.value.delay <= 36  # about the probe interval
    assert "circuit breaker open since" in str(deferred.value)
    assert redis_client.exists(LLM_BREAKER_KEY)
    assert redis_client.get(LLM_PROBE_KEY) == WAIT.encode()  # the next probe waits
    assert redis_client.exists(LLM_OUTAGE_SINCE_PREFIX + "r-1")
    assert env.llm_calls() == env.deps.settings.llm_max_attempts
    assert env.metrics() == []


def test_while_it_is_open_other_runs_defer_without_asking(
    env: Env, make_job: object, redis_client: redis.Redis
) -> None:
    """While another run probes, a run is deferred at once: no request reaches the
    endpoint."""
    make_job("job-2")  # type: ignore[operator]
    env.script("job-2", LEARNED)
    _open_with_probe_taken(redis_client)
    with pytest.raises(LlmOutageError):
        env.run("job-2")
    assert env.llm_calls() == 0 and env.metrics() == []


def test_one_probe_at_a_time(env: Env, redis_client: redis.Redis) -> None:
    """With the breaker open and no probe in flight, the first run to ask becomes the
    probe; a second one asking meanwhile is deferred."""
    s = env.deps.settings
    redis_client.set(LLM_BREAKER_KEY, repr(time.time()))
    with llm_guard(redis_client, s, "probe-run", max_delay=120):
        assert redis_client.get(LLM_PROBE_KEY) == b"probe-run"
        with (
            pytest.raises(LlmOutageError),
            llm_guard(redis_client, s, "other-run", max_delay=120),
        ):
            pass  # never reached: deferred on entry
    # The probe got its answer: closed.
    assert not redis_client.exists(LLM_BREAKER_KEY) and not redis_client.exists(LLM_PROBE_KEY)


def test_a_probe_stopped_for_its_own_reasons_frees_the_probe(
    env: Env, redis_client: redis.Redis
) -> None:
    """A probe that stopped without learning anything about the endpoint (a bug, its
    time limit) lets the next run probe at once; the breaker stays open."""
    redis_client.set(LLM_BREAKER_KEY, repr(time.time()))
    with (
        pytest.raises(KeyError),
        llm_guard(redis_client, env.deps.settings, "probe-run", max_delay=120),
    ):
        raise KeyError("a bug")
    assert redis_client.exists(LLM_BREAKER_KEY) and not redis_client.exists(LLM_PROBE_KEY)


def test_a_successful_probe_closes_it_and_the_deferred_run_applies(
    env: Env, make_job: object, redis_client: redis.Redis
) -> None:
    """Once the endpoint answers again, the deferred run comes back as the probe, gets
    its answer, closes the breaker and ends applied, once."""
    env.settings(llm_outage_probe_seconds=0.2)
    make_job("job-3")  # type: ignore[operator]
    env.script("job-3", DOWN, DOWN, DOWN, DOWN, LEARNED)
    with pytest.raises(LlmOutageError):
        env.run("job-3", reflection_job_id="r-3")
    time.sleep(0.3)  # the probe interval after the failed call
    report = env.run("job-3", reflection_job_id="r-3")
    assert report.outcome is Outcome.APPLIED
    assert not redis_client.exists(LLM_BREAKER_KEY)
    assert [(r["outcome"], r["error_code"]) for r in env.metrics()] == [("applied", None)]


def test_past_its_window_a_deferred_run_fails_llm_unavailable(
    env: Env, make_job: object, redis_client: redis.Redis
) -> None:
    """A run deferred for REFLECTION_LLM_OUTAGE_RETRY_HOURS (a fraction of an hour here)
    fails `llm_unavailable` with a row, without asking the endpoint again."""
    env.settings(llm_outage_retry_hours=0.0001)  # 0.36 s
    make_job("job-4")  # type: ignore[operator]
    env.script("job-4", LEARNED)
    _open_with_probe_taken(redis_client)
    with pytest.raises(LlmOutageError):
        env.run("job-4", reflection_job_id="r-4")
    time.sleep(0.4)
    report = env.run("job-4", reflection_job_id="r-4")
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "llm_unavailable")
    assert "REFLECTION_LLM_OUTAGE_RETRY_HOURS" in report.detail
    assert env.llm_calls() == 0
    assert [(r["outcome"], r["error_code"]) for r in env.metrics()] == [
        ("failed", "llm_unavailable")
    ]


def test_with_no_window_an_outage_fails_at_once_and_still_opens_the_breaker(
    env: Env, make_job: object, redis_client: redis.Redis
) -> None:
    """REFLECTION_LLM_OUTAGE_RETRY_HOURS=0: the run that meets the outage fails
    `llm_unavailable` as it did before the breaker; the breaker opens all the same."""
    env.settings(llm_outage_retry_hours=0)
    make_job("job-5")  # type: ignore[operator]
    env.script("job-5", DOWN)
    report = env.run("job-5")
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "llm_unavailable")
    assert "failed after" in report.detail
    assert redis_client.exists(LLM_BREAKER_KEY)


def test_a_run_that_saw_it_closed_writes_nothing(env: Env, redis_client: redis.Redis) -> None:
    """The common case, a closed breaker and an answer, leaves no key behind."""
    with llm_guard(redis_client, env.deps.settings, str(uuid.uuid4()), max_delay=120):
        pass
    assert redis_client.keys("reflection:llm*") == []


def test_a_breaker_error_after_the_answer_does_not_lose_it(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis going away during the call (a private server, stopped then) makes closing
    the breaker fail: that is logged, not raised; the answer is worth more."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed"
    server = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while not _pings(client):
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.05)
        client.set(LLM_BREAKER_KEY, repr(time.time()))
        with llm_guard(client, env.deps.settings, "probe-run", max_delay=120):
            server.terminate()
            server.wait(10)
    finally:
        client.close()
        server.kill()
        server.wait()
    assert "could not update the LLM circuit breaker (close)" in caplog.text


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
