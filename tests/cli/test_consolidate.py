"""`reflection consolidate USER [--now] [--dry-run] [--json]`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from reflection import storage
from reflection.records import EntryChanges
from tests.cli.conftest import Cli
from tests.integration.conftest import decision
from tests.integration.test_consolidation import PROMPT, counts, memory_files
from tests.integration.test_pipeline import index_lines, write_entry

pytestmark = pytest.mark.integration

MERGE = {"op": "remove", "name": "use-pytest", "merge_target": "prefers-pytest"}
ADD = {"op": "add", "name": "new", "description": "d", "type": "project", "body": "b"}


def _seed(cli: Cli) -> None:
    names = ["prefers-pytest", "use-pytest", "billing-db"]
    for name in names:
        write_entry(cli.env, name)
    at = datetime.now(UTC) - timedelta(days=1)
    with cli.env.engine.begin() as conn:
        storage.write_entries(
            conn, EntryChanges(user_id="alice", job="seed", at=at, found=dict.fromkeys(names))
        )
    answer = {"content": decision("paraphrases", [MERGE, ADD])}
    cli.env.llm.set_script({"rules": [{"match": PROMPT, "replies": [answer]}]})


def test_dry_run_prints_what_it_would_do_and_writes_nothing(cli: Cli) -> None:
    _seed(cli)
    before_files, before_rows = memory_files(cli.env), counts(cli.env)
    report = cli.json("consolidate", "alice", "--dry-run")
    assert report["dry_run"] and report["outcome"] == "applied"
    assert [(d["name"], d["code"]) for d in report["decisions"]] == [
        ("use-pytest", "ok"),
        ("new", "op_not_allowed"),
    ]
    assert any(d["path"] == "memory/use-pytest.md" for d in report["diffs"])
    assert memory_files(cli.env) == before_files and counts(cli.env) == before_rows
    text = cli("consolidate", "alice", "--dry-run")
    assert text.exit_code == 0 and "op_not_allowed" in text.stdout
    assert "nothing was written" in text.stdout
    assert memory_files(cli.env) == before_files and counts(cli.env) == before_rows


def test_now_runs_the_pass_here(cli: Cli) -> None:
    _seed(cli)
    report = cli.json("consolidate", "alice", "--now")
    assert report["outcome"] == "applied" and report["snapshot_id"]
    assert report["original_job_id"] == f"consolidate:alice:{report['reflection_job_id']}"
    assert "use-pytest.md" not in memory_files(cli.env)
    [line] = index_lines(cli.env)
    assert line["kind"] == "consolidation"
    [row] = cli.env.metrics()
    assert (row["kind"], row["outcome"], row["piece_name"]) == ("consolidation", "applied", "")
    shown = cli("show", "alice", report["snapshot_id"])
    assert shown.exit_code == 0 and "use-pytest" in shown.stdout, shown.output
    history = cli("history", "alice")
    assert history.exit_code == 0 and report["snapshot_id"] in history.stdout, history.output


def test_publish_sends_the_task_by_name(cli: Cli, broker: redis.Redis) -> None:
    result = cli.json("consolidate", "alice")
    assert result["published"] and result["user_id"] == "alice"
    [raw] = broker.lrange("reflection", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "consolidate"
    assert message["headers"]["id"] == result["task_id"]


def test_bad_user_is_refused(cli: Cli) -> None:
    for user in ("../x", "*"):
        result = cli("consolidate", user, "--now")
        assert result.exit_code == 2, result.output


def test_failed_pass_exits_1(cli: Cli) -> None:
    _seed(cli)
    cli.env.llm.set_script({"rules": [{"match": PROMPT, "replies": [{"content": "not json"}]}]})
    result: Any = cli("consolidate", "alice", "--now", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error_code"] == "llm_invalid_output"
