"""The cache-friendly prompt end to end (SPEC §12): two jobs of one user whose memory and
piece did not change share the prompt's prefix, the scripted server serves the second's
from its cache the way OpenAI does, and the cached tokens reach the metrics row, `stats`
and Prometheus."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from reflection.cli.stats import stats_report
from reflection.storage.reports import RunFilters
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import write_entry

pytestmark = pytest.mark.integration


def _cached_total() -> float:
    return REGISTRY.get_sample_value("reflection_llm_tokens_total", {"direction": "cached"}) or 0.0


def _user_prompts(env: Env) -> list[str]:
    return [
        r["json"]["messages"][1]["content"]
        for r in env.llm.requests
        if r["path"].endswith("/chat/completions")
    ]


def test_a_users_second_job_is_served_mostly_from_the_prompt_cache(env: Env, make_job: Any) -> None:
    """Same memory, same piece, another job: the second prompt repeats the first's prefix
    byte for byte, and at least 0.6 of its prompt tokens come from the cache."""
    for i in range(6):
        write_entry(
            env, f"fact-{i}", body=f"Deploys of service {i} go through the staging lane. " * 6
        )
    make_job("job-pc1", task="Deploy the invoices service")
    make_job("job-pc2", task="Fix the CSV export", result="exported 3 files")
    env.script("job-pc1", {"content": decision("nothing durable")})
    env.script("job-pc2", {"content": decision("nothing durable")})
    cached_before = _cached_total()
    env.run("job-pc1")
    env.run("job-pc2")
    first, second = _user_prompts(env)
    head = first[: first.index("# The job")]
    assert second.startswith(head) and "job-pc1" not in head
    one, two = env.metrics()
    assert one["tokens_cached"] == 0 and one["tokens_in"] > 1024
    assert two["tokens_cached"] >= 0.6 * two["tokens_in"], (two["tokens_cached"], two["tokens_in"])
    assert _cached_total() - cached_before == two["tokens_cached"]
    tokens = stats_report(env.engine, env.root, RunFilters())["tokens"]
    assert tokens["cached"] == two["tokens_cached"] and tokens["runs"] == 2
    assert tokens["cached_share"] == round(
        two["tokens_cached"] / (one["tokens_in"] + two["tokens_in"]), 3
    )


def test_a_changed_memory_is_a_cache_miss_past_the_system_prompt(env: Env, make_job: Any) -> None:
    """A memory entry added between two jobs changes the prefix: the second job is
    served from the cache no further than the system prompt and the piece (4 characters
    a token, the scripted server's count)."""
    write_entry(env, "fact-a", body="The staging lane is blue. " * 10)
    make_job("job-pm1")
    make_job("job-pm2")
    env.script("job-pm1", {"content": decision("nothing durable")})
    env.script("job-pm2", {"content": decision("nothing durable")})
    env.run("job-pm1")
    write_entry(env, "aaa-new-fact", body="A new fact, first by name. " * 10)
    env.run("job-pm2")
    first, second = _user_prompts(env)
    assert first[: first.index("\nmemory: ")] == second[: second.index("\nmemory: ")]
    assert first[: first.index("# The job")] != second[: second.index("# The job")]
    _, two = env.metrics()
    system = env.llm.requests[-1]["json"]["messages"][0]["content"]
    shared = len(system) + len(second[: second.index("\nmemory: ")]) + 16  # roles, separators
    assert 1024 <= two["tokens_cached"] <= shared / 4 < two["tokens_in"]
