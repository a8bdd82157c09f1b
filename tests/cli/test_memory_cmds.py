"""`reflection protect` / `unprotect`."""

from __future__ import annotations

from typing import Any

import pytest

from reflection.frontmatter import parse_entry
from tests.cli.conftest import Cli
from tests.integration.conftest import decision
from tests.integration.test_pipeline import write_entry
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration


def test_protect_then_unprotect(cli: Cli, make_job: Any) -> None:
    """protect sets `protected: true` (a reflection's update is then rejected
    `protected`); unprotect removes it; the body is kept."""
    write_entry(cli.env, "billing-db", body="Postgres 15.")
    path = cli.env.user().memory_file("billing-db")
    assert cli.json("protect", "alice", "billing-db")["changed"]
    entry = parse_entry(path.read_text(), stem="billing-db")
    assert entry.protected and entry.body == "Postgres 15."
    assert not cli.json("protect", "alice", "billing-db")["changed"]
    make_job("job-m")
    upd = {
        "op": "update",
        "evidence": EVIDENCE,
        "name": "billing-db",
        "description": "DB",
        "type": "project",
        "body": "Postgres 16.",
    }
    cli.env.script("job-m", {"content": decision("x", [upd])})
    report = cli.json("run", "job-m")
    assert report["outcome"] == "rejected" and report["decisions"][0]["code"] == "protected"
    result = cli("unprotect", "alice", "billing-db")
    assert result.exit_code == 0 and "not protected" in result.stdout
    assert not parse_entry(path.read_text(), stem="billing-db").protected


def test_protect_unknown_or_malformed_entry(cli: Cli) -> None:
    """An unknown entry (exit 4, as every unknown id) or a malformed file (exit 1) is
    refused in one line, and left untouched."""
    mem = cli.env.user().memory_dir
    mem.mkdir(parents=True)
    (mem / "broken.md").write_text("no frontmatter here")
    missing = cli("protect", "alice", "nope")
    assert missing.exit_code == 4 and "no memory entry" in missing.stderr
    broken = cli("protect", "alice", "broken")
    assert broken.exit_code == 1 and "malformed" in broken.stderr
    assert (mem / "broken.md").read_text() == "no frontmatter here"
    assert cli("protect", "alice", "Bad Name").exit_code == 4
