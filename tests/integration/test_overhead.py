"""The worker's own overhead per run, counted (SPEC §12, §14; issue 24): at most 4
fsyncs (the journal's file and folder, then one syncfs of what the roll-forward wrote),
8 Postgres round trips and 4 Redis round trips for a run that writes a memory entry.
Counts, not timings: the same every time on any machine."""

from __future__ import annotations

from typing import Any

import pytest

from bench.io_floor import FILES, IO_FLOOR_DIR, PROMPT, STATEMENTS, io_floor_run
from reflection.models import Outcome
from tests.integration.conftest import Env, decision
from tests.integration.test_pipeline import PYTEST_ENTRY
from tests.support.counting import FSYNCS, POSTGRES, REDIS, counting

pytestmark = pytest.mark.integration


def _warm(env: Env, make_job: Any) -> None:
    """One run first: the Redis scripts are loaded once per server, not per run."""
    make_job("job-warm", user_id="warm")
    env.script("job-warm", {"content": decision("nothing durable")})
    assert env.run("job-warm", user_id="warm").outcome is Outcome.ABSTAINED


@pytest.mark.parametrize("user", ["alice", "warm"], ids=["new-user", "known-user"])
def test_a_run_that_writes_memory_stays_within_its_io_budget(
    env: Env, make_job: Any, user: str
) -> None:
    """A run that adds an entry (file, MEMORY.md, snapshot, index line, entry record):
    3 fsyncs (one of them a syncfs), 8 Postgres and 4 Redis round trips."""
    _warm(env, make_job)
    make_job("job-io", user_id=user)
    env.script("job-io", {"content": decision("learned", [PYTEST_ENTRY])})
    with counting(env.engine, env.deps.redis) as counts:
        report = env.run("job-io", user_id=user)
    assert report.outcome is Outcome.APPLIED
    assert counts[FSYNCS] == 3 and counts["syncfs"] == 1, counts
    assert counts[POSTGRES] == 8 and counts["postgres transactions"] == 1, counts
    assert counts[REDIS] == 4, counts
    assert env.user(user).memory_file("prefers-pytest").exists()


def test_an_abstaining_run_costs_no_more(env: Env, make_job: Any) -> None:
    """Nothing learned: the same journal, snapshot and commit, fewer rows."""
    _warm(env, make_job)
    make_job("job-io2")
    env.script("job-io2", {"content": decision("nothing durable")})
    with counting(env.engine, env.deps.redis) as counts:
        assert env.run("job-io2").outcome is Outcome.ABSTAINED
    assert counts[FSYNCS] <= 4 and counts[POSTGRES] <= 8 and counts[REDIS] <= 4, counts


def test_the_breaker_is_asked_on_its_own_when_no_slot_is_taken(env: Env, make_job: Any) -> None:
    """Without a per-user cap there is no slot script to carry the breaker's state: the
    run asks for it alone (and takes no slot), 3 Redis round trips in all."""
    env.settings(user_max_in_flight=0)
    _warm(env, make_job)
    make_job("job-io3")
    env.script("job-io3", {"content": decision("nothing durable")})
    with counting(env.engine, env.deps.redis) as counts:
        assert env.run("job-io3").outcome is Outcome.ABSTAINED
    assert counts[REDIS] == 3, counts


@pytest.mark.parametrize(
    ("without", "fsyncs", "syncfs", "postgres"),
    [((), 3, 1, 8), ((STATEMENTS,), 3, 1, 4), ((FILES,), 2, 0, 8), ((PROMPT,), 3, 1, 8)],
    ids=["whole", "without-statements", "without-files", "without-prompt"],
)
def test_the_bench_io_floor_does_a_runs_io(
    env: Env, make_job: Any, without: tuple[str, ...], fsyncs: int, syncfs: int, postgres: int
) -> None:
    """`bench.io_floor`, the ceiling the overhead bench measures a run against, makes a
    run's round trips and fsyncs exactly (its variants, what they leave out), and
    records a metrics row as a run does (the bench counts those)."""
    _warm(env, make_job)
    make_job("job-floor", user_id="bob")
    env.llm.set_script(env.llm.script | {"default": {"content": decision("nothing durable")}})
    with counting(env.engine, env.deps.redis) as counts:
        io_floor_run(env.deps, "job-floor", "bob", without)
    assert counts[FSYNCS] == fsyncs and counts["syncfs"] == syncfs, counts
    assert counts[POSTGRES] == postgres and counts["postgres transactions"] == 1, counts
    assert counts[REDIS] == 4, counts
    assert [m["original_job_id"] for m in env.metrics()][-1] == "job-floor"
    own = env.user("bob").home / IO_FLOOR_DIR
    assert not list((own / "journal").glob("*"))  # deleted, as a run's (or never written)
    assert not env.user("bob").memory_dir.exists()  # a run of the user never reads its files
