"""A hostile LLM endpoint cannot block a user (issue 22, item 6), on the real Postgres.

Before: `usage.prompt_tokens = 2**31` passed validation, the memory files were written,
the int32 insert failed, the journal stayed, and every later run of that user failed the
same way, retried as an outage forever. Now usage counts are clamped and model names
checked at the endpoint; Postgres data and integrity errors (SQLSTATE 22, 23) are
permanent; and a journal whose rows Postgres refuses anyway commits them clamped, marks
its claim done and says so (`commit_clamped`), instead of being replayed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from reflection import faults
from reflection.clamp import INT32_MAX
from reflection.errors import DataRejectedError
from reflection.models import Outcome, Usage
from reflection.retries import Retry, as_reflection_error, retry_policy
from reflection.storage.db import driver_errors
from tests.hostile.conftest import Hostile, add, decision, expect

pytestmark = pytest.mark.integration

BIG = 2**31

USAGES: list[tuple[str, dict[str, Any], tuple[int, int]]] = [
    ("past-int32", {"prompt_tokens": BIG, "completion_tokens": BIG * 8}, (INT32_MAX, INT32_MAX)),
    ("negative", {"prompt_tokens": -5, "completion_tokens": -(BIG * 4)}, (0, 0)),
    ("not-numbers", {"prompt_tokens": "many", "completion_tokens": 1.5}, (0, 0)),
    (
        "cached-past-int32",
        {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": BIG},
        },
        (10, 3),
    ),
]


@pytest.mark.parametrize(("usage", "expected"), [u[1:] for u in USAGES], ids=[u[0] for u in USAGES])
def test_usage_from_the_endpoint_is_clamped_and_the_run_applies(
    hostile: Hostile, usage: dict[str, Any], expected: tuple[int, int]
) -> None:
    h = hostile
    h.job("job-u", user_id="alice", piece_name="default")
    h.env.script("job-u", {"content": decision("r", [add("fact")]), "usage": usage})
    report = h.run("job-u", make_job=False)
    expect(report, ["ok"])
    [row] = h.env.metrics()
    assert (row["tokens_in"], row["tokens_out"]) == expected
    assert 0 <= row["tokens_cached"] <= INT32_MAX
    # ... and the next run of the user is not blocked by anything left behind.
    other = add("other", body="The release train leaves on Tuesdays.")  # not a paraphrase
    expect(h.run("job-next", decision("r", [other])), ["ok"])


@pytest.mark.parametrize(
    "model",
    ["evil\x1b]52;c;aGVsbG8=\x07", "gpt\x00-4", "m" * 5000, "", "two words", "gpt\u202e4"],
    ids=["osc-52", "nul", "5000-chars", "empty", "space", "bidi"],
)
def test_a_model_name_that_is_not_one_is_recorded_as_the_configured_model(
    hostile: Hostile, model: str
) -> None:
    h = hostile
    script = h.env.llm.script
    h.env.llm.set_script({**script, "model": model})
    report = h.run("job-m", decision("r", [add("fact")]))
    expect(report, ["ok"])
    [row] = h.env.metrics()
    assert row["model"] == "scripted-1"
    [meta] = h.user().reflections_dir.glob("*/meta.json")
    assert json.loads(meta.read_text())["model"] == "scripted-1"


def test_a_plausible_model_name_is_kept(hostile: Hostile) -> None:
    h = hostile
    h.env.llm.set_script({**h.env.llm.script, "model": "meta-llama/Llama-3.1-8B:q4_k_m"})
    expect(h.run("job-m", decision("r", [add("fact")])), ["ok"])
    assert h.env.metrics()[0]["model"] == "meta-llama/Llama-3.1-8B:q4_k_m"


def test_the_usage_model_clamps_whatever_it_is_given() -> None:
    usage = Usage.model_validate({"tokens_in": BIG, "tokens_out": -1, "tokens_cached": "x"})
    assert (usage.tokens_in, usage.tokens_out, usage.tokens_cached) == (INT32_MAX, 0, 0)


STATEMENTS = [
    ("numeric-out-of-range-22003", "SELECT CAST(:v AS integer)", {"v": BIG}),
    ("invalid-text-22P02", "SELECT CAST(:v AS integer)", {"v": "twelve"}),
    ("nul-in-text", "SELECT CAST(:v AS text)", {"v": "a\x00b"}),
    ("not-null-23502", "INSERT INTO reflection_claims (original_job_id) VALUES ('x')", {}),
    (
        "unique-23505",
        "INSERT INTO reflection_claims (original_job_id, reflection_job_id, user_id, state,"
        " lease_expires_at) VALUES ('dup', 'r', 'u', 'done', now()), ('dup', 'r', 'u',"
        " 'done', now())",
        {},
    ),
]


@pytest.mark.parametrize(
    ("statement", "params"), [s[1:] for s in STATEMENTS], ids=[s[0] for s in STATEMENTS]
)
def test_postgres_data_and_integrity_errors_are_permanent(
    pg_engine: Engine, statement: str, params: dict[str, Any]
) -> None:
    """The real Postgres' SQLSTATE 22 and 23 errors: the task fails them at once (no
    retry), the storage layer raises them as `data_rejected`."""
    with pytest.raises(SQLAlchemyError) as raw, pg_engine.begin() as conn:
        conn.execute(text(statement), params)
    assert retry_policy(raw.value) is Retry.FAIL
    assert as_reflection_error(raw.value).code == "data_rejected"
    with pytest.raises(DataRejectedError), driver_errors(), pg_engine.begin() as conn:
        conn.execute(text(statement), params)


def test_postgres_down_is_still_an_outage() -> None:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(SQLAlchemyError) as raw, engine.connect():
        pass
    assert retry_policy(raw.value) is Retry.UNTIL_CLEARED
    assert as_reflection_error(raw.value).code == "infrastructure"


class Stop(Exception):
    """Raised by the fault hook: the run is killed right after its journal."""


def leave_journal(h: Hostile, job: str, change: str) -> None:
    """Run `job` and stop it right after its journal is written, as a killed worker."""

    def hook(name: str) -> None:
        if name == "after_journal":
            raise Stop

    faults.install(hook)
    try:
        h.job(job, user_id="alice", piece_name="default")
        h.env.script(job, {"content": decision("r", [add(change)])})
        with pytest.raises(Stop):
            h.env.run(job)
    finally:
        faults.install(None)


@pytest.mark.parametrize(
    "poison",
    [{"tokens_in": BIG}, {"model": "bad\x00model"}, {"tokens_in": BIG, "rejections": -BIG - 7}],
    ids=["int32", "nul", "both"],
)
def test_a_journal_postgres_refuses_commits_clamped_and_unblocks_the_user(
    hostile: Hostile, poison: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A journal whose metrics row Postgres refuses (written by an older worker before
    usage was clamped): the next run of the user rolls it forward, commits its rows
    clamped with `commit_clamped`, marks its claim done, logs it, and applies its own
    change. Before, that run and every later one failed `infrastructure`, forever."""
    h = hostile
    leave_journal(h, "job-old", "old-fact")
    [path] = h.user().journal_dir.glob("*.json")
    journal = json.loads(path.read_text())
    journal["metrics"].update(poison)
    path.write_text(json.dumps(journal))

    new = add("new-fact", body="The release train leaves on Tuesdays.")  # not a paraphrase
    report = h.run("job-new", decision("r", [new]))
    expect(report, ["ok"])
    assert not list(h.user().journal_dir.glob("*.json"))
    rows = {r["original_job_id"]: r for r in h.env.metrics()}
    old = rows["job-old"]
    assert (old["outcome"], old["error_code"]) == ("applied", "commit_clamped")
    assert 0 <= old["tokens_in"] <= INT32_MAX and "\x00" not in (old["model"] or "")
    assert rows["job-new"]["error_code"] is None
    assert (h.user().memory_dir / "old-fact.md").is_file()
    assert "commit_clamped" in caplog.text or "committing them clamped" in caplog.text
    # The old job is done: republishing it is a duplicate, not another replay.
    assert h.env.run("job-old").outcome is Outcome.DUPLICATE
