"""Terminal injection (issue 22, item 4): ESC/OSC/CSI sequences, C1 controls, bidi
overrides and tag characters in the model's reasoning, a change's name, detail or
description, a memory body, a piece summary or a model name never reach the operator's
terminal raw through a CLI command, in text or `--json`; MEMORY.md never holds them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import Result

from reflection.text import MULTILINE, find_unsafe_chars
from tests.cli.conftest import Cli, cli
from tests.cli.helpers import tuned_piece
from tests.integration.conftest import decision, env
from tests.support.db import EVIDENCE

__all__ = ["cli", "env"]

pytestmark = pytest.mark.integration

# Clipboard write (OSC 52), clear screen, a hidden link (OSC 8), an 8-bit CSI, a bidi
# override, a tag character, DEL.
EVIL = (
    "\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[H\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"
    "\x9b31m\u202egnp.exe\u2066\U000e0041\x7f"
)
SHOWN = "\\x1b]52;c;cHduZWQ="  # how the first sequence appears, escaped
# A description the model proposes with these is refused (`invalid_text`); one written
# by hand into an entry's frontmatter (the user's own agent can) is planted instead.
DESCRIPTION = "ok\x1b[2J\x9b1m\u202eevil\U000e0041"
PLANTED = (
    '---\nname: planted\ndescription: "ok\\e[2J\\x9b1m\\u202eevil\\U000e0041"\n'
    f"type: project\n---\n{EVIL}\n"
)
MODEL = "scripted\x1b]0;owned\x07\u202e"


def raw_chars(result: Result) -> list[str]:
    """The unsafe characters that reached stdout or stderr raw (line breaks and tabs are
    the output's own)."""
    return find_unsafe_chars(result.stdout + result.stderr, allow=MULTILINE)


def ok(cli: Cli, *args: str) -> Result:
    """A command that succeeds and prints nothing raw."""
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert raw_chars(result) == [], (args, raw_chars(result))
    return result


def _script_model(cli: Cli, model: str) -> None:
    script = cli.env.llm.script
    script["model"] = model
    cli.env.llm.set_script(script)


def _hostile_decision() -> dict[str, Any]:
    good = {
        "op": "add",
        "evidence": EVIDENCE,
        "name": "fact",
        "description": "ok evil",
        "type": "project",
        "body": f"line one\n{EVIL}\nline three\n",
    }
    bad = {
        "op": "add",
        "evidence": EVIDENCE,
        "name": f"x{EVIL}",
        "description": "d",
        "type": "user",
        "body": "b",
    }
    return decision(EVIL, [good, bad])  # fmt: skip


@pytest.fixture
def hostile_run(cli: Cli, make_job: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A job whose model, reasoning, changes and memory hold every kind of sequence.

    Both entries are mostly the same escape sequences, which the near-duplicate measure
    rightly finds alike; this test is about the terminal, so only an identical text
    would be a near duplicate here."""
    monkeypatch.setenv("REFLECTION_NEAR_DUPLICATE_THRESHOLD", "1")
    memory = cli.env.user().memory_dir
    memory.mkdir(parents=True)
    (memory / "planted.md").write_text(PLANTED)
    _script_model(cli, MODEL)
    make_job("job-t")
    cli.env.script("job-t", {"content": _hostile_decision()})
    return "job-t"


def test_run_prints_the_models_text_escaped(cli: Cli, hostile_run: str) -> None:
    """`run --dry-run` and `run` show the reasoning, the rejected name, the diff of the
    body and the model escaped (`\\x1b` visible), never raw."""
    for args in (("run", hostile_run, "--dry-run"), ("run", hostile_run)):
        result = ok(cli, *args)
        assert SHOWN in result.stdout
        assert "\\u202egnp.exe" in result.stdout


def test_show_history_stats_and_json_hold_nothing_raw(cli: Cli, hostile_run: str) -> None:
    """After the run, `history`, `show`, `stats` and their `--json` print nothing raw;
    the JSON still reads back to the stored text."""
    ok(cli, "run", hostile_run)
    [line] = cli.json("history", "alice")
    snap = line["snapshot_id"]
    shown = ok(cli, "show", "alice", snap)
    assert SHOWN in shown.stdout and "\\U000e0041" in shown.stdout
    ok(cli, "history", "alice")
    ok(cli, "stats")
    for args in (("show", "alice", snap), ("history", "alice"), ("stats",)):
        result = ok(cli, *args, "--json")
        json.loads(result.stdout)
    meta = json.loads(ok(cli, "show", "alice", snap, "--json").stdout)["meta"]
    assert "\x1b]52;c;" in meta["reasoning"] and "\u202e" in meta["reasoning"]
    memory_md = cli.env.user().memory_index.read_text()
    assert find_unsafe_chars(memory_md, allow="\n") == []
    assert "- planted (project): ok[2J1mevil" in memory_md


def test_a_planted_index_line_and_meta_print_nothing_raw(cli: Cli, hostile_run: str) -> None:
    """Index lines and meta.json written by hand (the user's own agent can) are printed
    escaped by `history` and `show`, and `revert` refuses without echoing them raw."""
    ok(cli, "run", hostile_run)
    u = cli.env.user()
    [line] = cli.json("history", "alice")
    snap = u.snapshot_dir(line["snapshot_id"])
    meta = json.loads((snap / "meta.json").read_text())
    meta["decisions"][0]["detail"] = EVIL
    meta["piece_name"] = EVIL
    (snap / "meta.json").write_text(json.dumps(meta))
    with u.snapshot_index.open("a") as f:
        f.write(json.dumps({"snapshot_id": EVIL, "kind": EVIL, "outcome": EVIL}) + "\n")
    assert SHOWN in ok(cli, "history", "alice").stdout
    assert SHOWN in ok(cli, "show", "alice", snap.name).stdout
    ok(cli, "stats")
    assert raw_chars(cli("revert", "alice", snap.name)) == []
    assert raw_chars(cli("show", "alice", EVIL)) == []
    # A code that is no code makes the meta malformed: refused, and the refusal, which
    # quotes it, is escaped too.
    meta["decisions"][0]["code"] = EVIL
    (snap / "meta.json").write_text(json.dumps(meta))
    refused = cli("show", "alice", snap.name)
    assert refused.exit_code == 1 and "malformed" in refused.stderr
    assert raw_chars(refused) == []


def test_a_piece_summary_is_listed_escaped(cli: Cli, make_job: Any) -> None:
    """A staged piece edit's summary is printed escaped by `proposals` (and its JSON)."""
    cli.set("piece_edit_mode", "review")
    make_job("job-p")
    edit = {**tuned_piece(), "summary": EVIL}
    cli.env.script("job-p", {"content": decision("tune", piece_edit=edit)})
    cli.env.run("job-p")
    assert "\\x1b" in ok(cli, "proposals").stdout  # wrapped in its column
    [prop] = json.loads(ok(cli, "proposals", "--json").stdout)
    assert "\x1b]52;c;" in prop["summary"]
    ok(cli, "proposals", "--diff", str(prop["id"]))


def test_doctor_and_memory_commands_print_nothing_raw(cli: Cli, hostile_run: str) -> None:
    """`doctor` quoting a hostile setting, and `protect` naming an entry (or refusing a
    hostile name), print nothing raw."""
    ok(cli, "run", hostile_run)
    cli.monkeypatch.setenv("REFLECTION_LLM_MODEL", MODEL)
    doctor = cli("doctor")
    assert raw_chars(doctor) == [] and "\\x1b]0;owned" in doctor.stdout
    ok(cli, "protect", "alice", "fact")
    ok(cli, "unprotect", "alice", "fact")
    refused = cli("protect", "alice", EVIL)
    assert refused.exit_code != 0 and raw_chars(refused) == []
