"""Piece YAML: parse limits, every validation rule, edit verdicts and reading the file."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from reflection import constants as c
from reflection.models import Code
from reflection.pieces import (
    PieceError,
    check_piece_edit,
    load_piece_file,
    parse_piece_yaml,
    validate_piece,
)

PIECE = """\
name: default
description: Plan and implement
max_movements: 6
initial_movement: plan
movements:
  - name: plan
    persona: planner
    instruction: |
      Plan it.
    edit: false
    required_permission_mode: readonly
    allowed_tools: [Read, Grep]
    rules:
      - condition: the plan is ready
        next: implement
      - condition: impossible
        next: ABORT
  - name: implement
    persona: coder
    instruction: Do it.
    edit: true
    required_permission_mode: edit
    allowed_tools: [Read, Edit]
    rules:
      - condition: done
        next: COMPLETE
"""

BASE: dict[str, Any] = yaml.safe_load(PIECE)

# --- parsing -------------------------------------------------------------------------


def test_parse_returns_the_mapping() -> None:
    """A well-formed piece parses to the same data as yaml.safe_load."""
    assert parse_piece_yaml(PIECE) == BASE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: 1\n---\nb: 2\n", "more than one YAML document"),
        ("---\na: 1\n---\n", "more than one YAML document"),
        ("a: &x [1, 2]\nb: 1\n", "anchors are not allowed"),
        ("b: *x\n", "aliases are not allowed"),
        (
            'a: &a ["lol", "lol", "lol"]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c]\n',
            "anchors are not allowed",
        ),
        ("a: !!python/object/apply:os.system ['true']\n", "tags are not allowed"),
        ("a: !!python/object:builtins.dict {}\n", "tags are not allowed"),
        ("a: !custom value\n", "tags are not allowed"),
        ("a: !!str 1\n", "tags are not allowed"),
        ("a: !!binary aGVsbG8=\n", "tags are not allowed"),
        ("!!map {a: 1}\n", "tags are not allowed"),
        ("- a\n- b\n", "must be a YAML mapping, got list"),
        ("just a string\n", "must be a YAML mapping, got str"),
        ("", "must be a YAML mapping, got nothing"),
        ("# only a comment\n", "must be a YAML mapping, got nothing"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: {x: 1}\nb:\n  <<: {edit: true}\n", "merge keys"),
        ("? [a, b]\n: 1\n", "key must be a scalar"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than"),
        ("name: [unclosed\n", "not valid YAML"),
        ("a: 'unterminated\n", "not valid YAML"),
        ("a:\tb: c\n", "not valid YAML"),
    ],
)
def test_parse_refuses(text: str, reason: str) -> None:
    """Multiple documents, anchors/aliases, tags, non-mappings, duplicate and merge keys,
    deep nesting and syntax errors are all PieceError with a precise reason."""
    with pytest.raises(PieceError, match=reason):
        parse_piece_yaml(text)


def test_parse_refuses_too_large() -> None:
    """A piece over max_bytes is refused before it is parsed."""
    with pytest.raises(PieceError, match="over the limit of 100"):
        parse_piece_yaml("a: " + "x" * 100, max_bytes=100)


def test_parse_counts_utf8_bytes() -> None:
    """The size limit counts UTF-8 bytes, not characters."""
    text = "a: " + "é" * 60  # 63 characters, 123 bytes
    with pytest.raises(PieceError, match="123 bytes"):
        parse_piece_yaml(text, max_bytes=100)
    assert parse_piece_yaml(text, max_bytes=123) == {"a": "é" * 60}


def test_parse_default_limit_is_max_piece_bytes() -> None:
    """Without max_bytes the shared MAX_PIECE_BYTES limit applies."""
    with pytest.raises(PieceError, match=str(c.MAX_PIECE_BYTES)):
        parse_piece_yaml("a: " + "x" * c.MAX_PIECE_BYTES)


def test_parse_refuses_unencodable_text() -> None:
    """Text holding a lone surrogate cannot be UTF-8 and is refused."""
    with pytest.raises(PieceError, match="UTF-8"):
        parse_piece_yaml("a: '\ud800'\n")


def test_billion_laughs_is_refused_quickly() -> None:
    """A nine-level alias bomb is refused at its first anchor, not expanded."""
    lines = ['l0: &l0 "lol"'] + [
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)
    ]
    with pytest.raises(PieceError, match="anchors"):
        parse_piece_yaml("\n".join(lines))


# --- validation ----------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """A mutation that sets (or, with ..., deletes) a dotted path like movements.0.edit."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return mutate


def _chain(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for m in mutations:
            m(data)

    return mutate


def _validate(mutation: Mutation, expected_name: str = "default") -> None:
    data = copy.deepcopy(BASE)
    mutation(data)
    validate_piece(data, expected_name=expected_name)


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        (_set("name", "other"), "name must be 'default'"),
        (_set("name", ...), "name must be 'default'"),
        (_set("description", 3), "description must be a string"),
        (_set("max_movements", 0), "max_movements must be a positive integer"),
        (_set("max_movements", -2), "max_movements must be a positive integer"),
        (_set("max_movements", "12"), "max_movements must be a positive integer"),
        (_set("max_movements", 2.5), "max_movements must be a positive integer"),
        (_set("max_movements", True), "max_movements must be a positive integer"),
        (_set("movements", ...), "movements must be a non-empty list"),
        (_set("movements", []), "movements must be a non-empty list"),
        (_set("movements", {"plan": {}}), "movements must be a non-empty list"),
        (_set("movements.0", "plan"), r"movements\[0\] must be a mapping"),
        (_set("movements.0.name", "Plan It"), r"movements\[0\].name must be a slug"),
        (_set("movements.0.name", "../etc"), r"movements\[0\].name must be a slug"),
        (_set("movements.0.name", ""), r"movements\[0\].name must be a slug"),
        (_set("movements.0.name", 7), r"movements\[0\].name must be a slug"),
        (_set("movements.0.name", ...), r"movements\[0\].name must be a slug"),
        (_set("movements.0.name", "COMPLETE"), "reserved for rule targets"),
        (_set("movements.1.name", "plan"), "unique; repeated: plan"),
        (_set("initial_movement", "review"), "initial_movement 'review' is not a movement"),
        (_set("movements.0.rules.0.next", "nowhere"), r"rules\[0\].next 'nowhere' is not"),
        (_set("movements.0.rules.0.next", "complete"), "is not a movement name"),
        (_set("movements.0.rules.0.condition", ...), r"rules\[0\].condition must be a non-empty"),
        (_set("movements.0.rules.0.condition", " "), r"rules\[0\].condition must be a non-empty"),
        (_set("movements.0.rules.0.next", 3), r"rules\[0\].next must be a non-empty"),
        (_set("movements.0.rules.0", "go on"), r"rules\[0\] must be a mapping"),
        (_set("movements.0.rules", {"condition": "x"}), "rules must be a list"),
        (_set("movements.0.rules.0.priority", 1), "unknown keys: priority"),
        (_set("movements.0.edit", "yes"), "edit must be true or false"),
        (_set("movements.0.edit", 1), "edit must be true or false"),
        (_set("movements.0.required_permission_mode", "admin"), "must be one of readonly"),
        (_set("movements.0.required_permission_mode", None), "must be one of readonly"),
        (_set("movements.0.allowed_tools", "Read"), "allowed_tools must be a list"),
        (_set("movements.0.allowed_tools", ["Read", 3]), "allowed_tools must be a list"),
        (_set("movements.0.allowed_tools", [""]), "allowed_tools must be a list"),
        (_set("movements.0.instruction", ...), "needs a non-empty instruction"),
        (_set("movements.0.instruction", "  \n"), "needs a non-empty instruction"),
        (_set("movements.0.instruction", ["Plan"]), "instruction must be a string"),
        (_set("movements.0.persona", {"role": "x"}), "persona must be a string"),
        (_set("movements.0.sandbox", False), "unknown keys: sandbox"),
        (_set("permissions", "all"), "piece has unknown keys: permissions"),
    ],
)
def test_validate_refuses(mutation: Mutation, reason: str) -> None:
    """Each rule of the piece format is enforced with a reason naming the problem."""
    with pytest.raises(PieceError, match=reason):
        _validate(mutation)


@pytest.mark.parametrize(
    "mutation",
    [
        _set("description", ...),
        _set("max_movements", ...),
        _set("initial_movement", ...),
        _set("movements.0.persona", ...),
        _set("movements.0.edit", ...),
        _set("movements.0.required_permission_mode", ...),
        _set("movements.0.required_permission_mode", "full"),
        _set("movements.0.allowed_tools", ...),
        _set("movements.0.allowed_tools", []),
        _set("movements.0.rules", ...),
        _set("movements.0.rules", []),
        _chain(
            _set("movements.1.name", "Build_Step-2"),
            _set("movements.0.rules.0.next", "Build_Step-2"),
        ),
        _set("movements.0.rules.0.next", "plan"),
        _set("movements.1.rules.0.next", "ABORT"),
    ],
)
def test_validate_accepts(mutation: Mutation) -> None:
    """Optional keys may be absent; self-loops, terminals and mixed-case names are fine."""
    _validate(mutation)


def test_validate_refuses_a_non_mapping() -> None:
    """A top level that is not a mapping is refused even when passed directly."""
    with pytest.raises(PieceError, match="must be a mapping"):
        validate_piece([], expected_name="default")  # type: ignore[arg-type]


# --- check_piece_edit ----------------------------------------------------------------


RESTYLED = "# tuned\n" + PIECE.replace("[Read, Grep]", "[ Read,  Grep ]") + "\n\n"
REQUOTED = PIECE.replace("instruction: Do it.", "instruction: 'Do it.'")
WIDER = PIECE.replace("[Read, Grep]", "[Read, Grep, Bash]").replace(
    "max_movements: 6", "max_movements: 9"
)


@pytest.mark.parametrize(
    ("new", "code", "detail"),
    [
        (PIECE.replace("Plan it.", "Plan it, listing the risks."), Code.OK, ""),
        (PIECE.replace("persona: coder", "persona: senior engineer"), Code.OK, ""),
        (PIECE.replace("max_movements: 6", "max_movements: 4"), Code.OK, ""),
        (PIECE, Code.PIECE_UNCHANGED, "same piece"),
        (RESTYLED, Code.PIECE_UNCHANGED, "same"),
        (REQUOTED, Code.PIECE_UNCHANGED, "same"),
        ("name: [unclosed", Code.PIECE_INVALID, "not valid YAML"),
        ("- a list\n", Code.PIECE_INVALID, "mapping"),
        (PIECE.replace("name: default", "name: other"), Code.PIECE_INVALID, "name must be"),
        (PIECE.replace("next: implement", "next: nowhere"), Code.PIECE_INVALID, "nowhere"),
        (PIECE + "extra: 1\n", Code.PIECE_INVALID, "unknown keys: extra"),
        (PIECE.replace("edit: false", "edit: true"), Code.PIECE_ESCALATION, "edit false -> true"),
        (WIDER, Code.PIECE_ESCALATION, "movement 'plan': gains tools Bash; max_movements 6 -> 9"),
    ],
)
def test_check_piece_edit(new: str, code: Code, detail: str) -> None:
    """Invalid first, then unchanged (parsed data equal), then escalation, else ok."""
    got_code, got_detail = check_piece_edit(PIECE, new, piece_name="default")
    assert got_code is code
    assert detail in got_detail
    assert (got_detail == "") is (code is Code.OK)


def test_edit_of_an_invalid_current_piece_is_refused() -> None:
    """With a current piece that does not validate, nothing can be judged: piece_invalid."""
    broken = PIECE.replace("next: implement", "next: nowhere")
    code, detail = check_piece_edit(broken, PIECE, piece_name="default")
    assert code is Code.PIECE_INVALID
    assert detail.startswith("current piece is invalid; an edit cannot be checked for escalation")


def test_invalid_new_piece_is_reported_before_an_invalid_current_one() -> None:
    """When both are invalid the reason given is the new piece's."""
    code, detail = check_piece_edit("a: [", "- x\n", piece_name="default")
    assert code is Code.PIECE_INVALID
    assert "mapping" in detail and "current" not in detail


# --- load_piece_file -----------------------------------------------------------------


def test_load_reads_a_regular_file(tmp_path: Path) -> None:
    """A regular UTF-8 file is returned as text, unchanged."""
    path = tmp_path / "default.yaml"
    path.write_text(PIECE + "# é\n", encoding="utf-8")
    assert load_piece_file(path) == PIECE + "# é\n"


def test_load_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    """A missing file is FileNotFoundError, so callers can fall back to the built-in."""
    with pytest.raises(FileNotFoundError):
        load_piece_file(tmp_path / "nope.yaml")


def test_load_refuses_a_symlink(tmp_path: Path) -> None:
    """A symlink is refused, even one pointing at a valid piece."""
    target = tmp_path / "real.yaml"
    target.write_text(PIECE)
    link = tmp_path / "default.yaml"
    link.symlink_to(target)
    with pytest.raises(PieceError, match="symlink"):
        load_piece_file(link)


def test_load_refuses_an_oversized_file(tmp_path: Path) -> None:
    """A file over MAX_PIECE_BYTES is refused without reading it all."""
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (c.MAX_PIECE_BYTES + 1))
    with pytest.raises(PieceError, match="larger than"):
        load_piece_file(path)


def test_load_refuses_non_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are refused with the offending position."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PieceError, match="not UTF-8"):
        load_piece_file(path)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    """A directory where the piece should be is not a regular file."""
    (tmp_path / "default.yaml").mkdir()
    with pytest.raises(PieceError, match="not a regular file"):
        load_piece_file(tmp_path / "default.yaml")


@pytest.mark.timeout(10)
def test_load_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO is refused at once instead of hanging the worker on open()."""
    path = tmp_path / "default.yaml"
    os.mkfifo(path)
    with pytest.raises(PieceError, match="not a regular file"):
        load_piece_file(path)
