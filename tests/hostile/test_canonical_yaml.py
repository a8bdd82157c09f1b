"""The accepted piece is written as canonical YAML (issue 22, item 7; SPEC §14): re-dumped
from the data this worker validated, so a YAML 1.2 reader (the agent runner may be one)
reads exactly what was judged. `edit: off` is `false` here and the string "off" (true
enough for a careless runner) to YAML 1.2; `max_movements: 014` is 12 here and 14 there.
Hashes, `piece_unchanged`, snapshots and revert use the canonical text; comments in a
user's copy are not kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from sqlalchemy import text as sql

from reflection.lock import operator_lock
from reflection.pieces import canonical_piece, canonical_text, parse_piece_yaml
from reflection.records import sha256
from reflection.revert import revert_snapshot
from reflection.safeyaml import load_strict
from tests.hostile.conftest import BUILTIN_PIECES, Hostile, builtin_piece, edit, expect, movement

BASE = (BUILTIN_PIECES / "default.yaml").read_text()


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's parser with the YAML 1.2 core schema's scalar resolution (what a YAML 1.2
    reader such as ruamel.yaml, Go's yaml.v3 or js-yaml 4 makes of a plain scalar)."""


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    Yaml12Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first)
    )


def _int12(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = str(loader.construct_scalar(node))
    base = 8 if value.startswith("0o") else 16 if value.startswith("0x") else 10
    return int(value[2:] if base != 10 else value, base)


def _float12(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = str(loader.construct_scalar(node)).lower()
    return float(value.replace(".inf", "inf").replace(".nan", "nan"))


def _bool12(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _int12)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _float12)
Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _bool12)


def read_12(text: str) -> Any:
    return yaml.load(text, Loader=Yaml12Loader)  # a SafeLoader subclass


def read_here(text: str) -> Any:
    return load_strict(text, max_depth=32)


AMBIGUOUS = [
    "off", "on", "yes", "no", "y", "n", "True", "NULL", "~", "", "014", "0o14", "0x1F",
    "1e3", "1_000", ".inf", "-.5", "+12", "12:30", "2001-02-03", "3.0", "0b101", "=",
    "- item", "key: value", "# not a comment", "@at", "`tick", "'quoted'", '"dq"',
    "trailing space ", " leading space", "multi\nline\n", "multi\nline no end",
    "  indented first\nline\n", "tab\there", "line with trailing \nspace\n", "ünïcode ✓",
]  # fmt: skip


@pytest.mark.parametrize("value", AMBIGUOUS, ids=[repr(v)[:30] for v in AMBIGUOUS])
def test_a_scalar_reads_the_same_to_yaml_1_1_and_1_2(value: str) -> None:
    """Whatever string a movement's text is, its canonical YAML reads back as that string
    here and to a YAML 1.2 reader; multi-line text is a literal block where it can be."""
    data = builtin_piece()
    movement(data, "plan").update(persona=value, instruction=value or "x")
    text = canonical_piece(data)
    assert read_here(text) == data
    assert read_12(text) == data
    if "\n" in value and not value.endswith(" ") and " \n" not in value:
        assert "instruction: |" in text


def test_the_builtins_are_canonical_already_in_meaning() -> None:
    for path in sorted(BUILTIN_PIECES.glob("*.yaml")):
        canonical = canonical_text(path.read_text())
        assert read_12(canonical) == read_here(canonical) == read_here(path.read_text())
        assert canonical_text(canonical) == canonical  # a fixed point


# The hostile edit: every spelling below means one thing to PyYAML and another to YAML 1.2.
SPELLED = (
    BASE.replace("max_movements: 12", "max_movements: 014")  # 12 here, 14 in YAML 1.2
    .replace("edit: false", "edit: off")  # false here, the string "off" in YAML 1.2
    .replace("persona: planner", "persona: planner  # a comment nobody keeps")
    .replace("persona: reviewer", "persona: 0o17")  # the string "0o17" here, 15 in 1.2
)


@pytest.mark.integration
def test_an_ambiguous_edit_is_written_as_what_was_judged(hostile: Hostile) -> None:
    assert read_12(SPELLED) != read_here(SPELLED)  # the trap is real
    report = hostile.run("job-spelled", edit(SPELLED))
    expect(report, ["ok"])
    written = hostile.user().piece_copy("default").read_text()
    assert written == canonical_text(SPELLED)
    assert read_12(written) == read_here(written) == read_here(SPELLED)
    assert "max_movements: 12\n" in written and "edit: off" not in written
    assert "persona: '0o17'" in written and "#" not in written
    assert report.snapshot_dir is not None
    assert (report.snapshot_dir / "piece.after.yaml").read_text() == written
    assert (report.snapshot_dir / "piece.before.yaml").read_text() == canonical_text(BASE)
    with hostile.env.engine.connect() as conn:
        before, after = conn.execute(
            sql("SELECT before_sha256, after_sha256 FROM piece_edits WHERE user_id = 'alice'")
        ).one()
    assert (before, after) == (sha256(canonical_text(BASE)), sha256(written))


@pytest.mark.integration
def test_a_respelling_is_unchanged(hostile: Hostile) -> None:
    """Comments, flow lists, quoting and `edit: no` for `edit: false`: the same canonical
    text, so `piece_unchanged`, and nothing is written."""
    respelled = "# my notes\n" + BASE.replace("edit: false", "edit: no").replace(
        "max_movements: 12", "max_movements: 0xC"
    )
    assert parse_piece_yaml(respelled) == parse_piece_yaml(BASE)
    report = hostile.run(
        "job-respelled", edit(yaml.safe_dump(builtin_piece(), default_flow_style=True))
    )
    expect(report, ["piece_unchanged"])
    expect(hostile.run("job-respelled-2", edit(respelled)), ["piece_unchanged"])
    assert not hostile.user().piece_copy("default").exists()


@pytest.mark.integration
def test_a_commented_user_copy_is_snapshotted_and_reverted_canonically(hostile: Hostile) -> None:
    """A user's hand-written copy (comments, `edit: off`) edited by a run: the snapshot's
    before is its canonical text, and reverting restores that text (the comments are not
    kept, as the README says)."""
    copy = hostile.user().piece_copy("default")
    copy.parent.mkdir(parents=True)
    mine = "# tuned by hand\n" + BASE.replace("edit: false", "edit: off")
    copy.write_text(mine)
    tuned = BASE.replace("persona: planner", "persona: careful planner")
    report = hostile.run("job-over-copy", edit(tuned))
    expect(report, ["ok"])
    assert copy.read_text() == canonical_text(tuned)
    assert report.snapshot_dir is not None
    assert (report.snapshot_dir / "piece.before.yaml").read_text() == canonical_text(mine)
    with operator_lock(hostile.env.deps.settings, hostile.env.deps.redis, "alice") as lock:
        revert_snapshot(
            paths=hostile.user(),
            snapshot_id=report.snapshot_dir.name,
            lock=lock,
            engine=hostile.env.engine,
            now=datetime.now(UTC),
        )
    assert copy.read_text() == canonical_text(mine)
    assert read_12(copy.read_text()) == read_here(mine)
