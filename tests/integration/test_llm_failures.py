"""How a run ends when the LLM endpoint answers something unusable, or says the request
is over its context window: a clear code and a metrics row, never `internal`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Env, decision

pytestmark = pytest.mark.integration


def test_a_proxy_page_under_http_200_is_retried_then_llm_unavailable(
    env: Env, make_job: Any
) -> None:
    """A proxy's HTML page (HTTP 200) every time: retried like an outage, then
    `llm_unavailable` with its attempts recorded (it used to crash the run `internal`)."""
    env.settings(llm_outage_retry_hours=0)  # no outage window: fail as the outage is met
    make_job("job-html")
    env.script("job-html", {"body": "<html><body>Bad gateway</body></html>"})
    report = env.run("job-html")
    assert report.error_code == "llm_unavailable"
    [row] = env.metrics()
    assert row["llm_attempts"] == env.deps.settings.llm_max_attempts == env.llm_calls()


def test_an_error_object_under_http_200_then_an_answer_succeeds(env: Env, make_job: Any) -> None:
    make_job("job-err200")
    env.script(
        "job-err200",
        {"body": {"error": {"message": "upstream overloaded", "code": 503}}},
        {"content": decision("fine")},
    )
    report = env.run("job-err200")
    assert report.error_code is None
    [row] = env.metrics()
    assert row["llm_attempts"] == 2 == env.llm_calls()
    second = [r["json"] for r in env.llm.requests if r["path"].endswith("/chat/completions")][1]
    assert len(second["messages"]) == 2  # asked again, not a repair of an "empty" answer


def test_the_endpoints_context_length_error_fails_context_overflow(env: Env, make_job: Any) -> None:
    """The model's window is smaller than the guard was told: `context_overflow` after one
    request, and the next run still asks in the best output mode."""
    make_job("job-long")
    make_job("job-next")
    env.script("job-long", {"status": 400, "error": "This model's maximum context length is 4096"})
    env.script("job-next", {"content": decision("fine")})
    assert env.run("job-long").error_code == "context_overflow"
    assert env.llm_calls() == 1
    assert env.run("job-next").error_code is None
    calls = [r["json"] for r in env.llm.requests if r["path"].endswith("/chat/completions")]
    assert [c["response_format"]["type"] for c in calls] == ["json_schema", "json_schema"]
    rows = env.metrics()
    assert [r["error_code"] for r in rows] == ["context_overflow", None]
