"""The stream simulation end to end on the real Postgres and Redis: a short stream through
the worker's stages, rules off and on (issue 21 item 5, SPEC §11, §14). It asserts the
behaviour, never timings: the rules leave fewer duplicates than no rules, no instruction
that only a fetched page supports, and the consolidation pass ran as the worker's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from reflection.clients import make_engine
from reflection.evals.stream.runner import StreamError
from reflection.evals.stream.session import StreamConfig, run_stream
from reflection.settings import Settings
from reflection.storage import memory_entries, reflection_metrics
from tests.conftest import TEST_DB_URL, TEST_REDIS_URL
from tests.support.db import scratch_database

pytestmark = pytest.mark.integration

SHORT = StreamConfig(jobs=40, users=2, days=180, seed=3, sample_every=10)


def _totals(run: dict[str, Any], key: str) -> int:
    return sum(int(u[key]) for u in run["users"])


@pytest.fixture
def fresh_db(redis_client: redis.Redis) -> Any:
    with scratch_database(TEST_DB_URL, "_stream") as url:
        yield url


def test_a_short_stream_on_postgres_with_the_rules_on_beats_the_rules_off(
    fresh_db: str, tmp_path: Path
) -> None:
    data = run_stream(
        SHORT, Settings(), database_url=fresh_db, redis_url=TEST_REDIS_URL, workdir=tmp_path
    )
    off, on = data["runs"]["off"], data["runs"]["on"]
    # Without the rules the careless model piles up paraphrases and obeys a page.
    assert _totals(off, "duplicate_pairs") > 0
    assert _totals(off, "untrusted_instructions") > 0
    assert off["consolidations"] == {}
    # With them: fewer duplicates, no instruction only a page supports.
    assert _totals(on, "duplicate_pairs") < _totals(off, "duplicate_pairs")
    assert _totals(on, "untrusted_instructions") == 0
    assert {"near_duplicate", "untrusted_source"} <= set(on["refused"])
    assert on["rules"] == "evidence rules on, consolidation on"
    assert sum(on["consolidations"].values()) > 0
    # Every job was reflected to an end (no failure, nothing left for a retry).
    reflections = {k: v for k, v in on["outcomes"].items() if ":" not in k}
    assert set(off["outcomes"]) <= {"applied", "abstained", "rejected"}
    assert set(reflections) <= {"applied", "abstained", "rejected"}
    assert sum(off["outcomes"].values()) == sum(reflections.values()) == SHORT.jobs
    # The worker's own rows: consolidation passes recorded as such, for the on run's
    # users only; confirmations counted on the entry records.
    engine = make_engine(fresh_db)
    try:
        with engine.connect() as conn:
            kinds: dict[str, int] = dict(
                conn.execute(
                    select(reflection_metrics.c.kind, func.count()).group_by(
                        reflection_metrics.c.kind
                    )
                ).all()
            )
            passes_off = conn.execute(
                select(func.count()).where(
                    reflection_metrics.c.kind == "consolidation",
                    reflection_metrics.c.user_id.like("st3-off-%"),
                )
            ).scalar()
            confirmed = conn.execute(
                select(func.count()).where(memory_entries.c.confirmations > 0)
            ).scalar()
    finally:
        engine.dispose()
    assert kinds["reflection"] == 2 * SHORT.jobs
    assert kinds["consolidation"] == sum(on["consolidations"].values())
    assert passes_off == 0
    assert confirmed


def test_the_same_seed_measures_the_same_and_a_database_is_used_once(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = StreamConfig(jobs=12, users=2, days=60, seed=5, sample_every=4)
    a = run_stream(config, Settings(), which="on", redis_url=TEST_REDIS_URL, workdir=tmp_path / "a")
    redis_client.flushdb()
    b = run_stream(config, Settings(), which="on", redis_url=TEST_REDIS_URL, workdir=tmp_path / "b")
    assert a == b
    with pytest.raises(StreamError, match="already holds"):
        run_stream(config, Settings(), which="on", redis_url=TEST_REDIS_URL, workdir=tmp_path / "a")
