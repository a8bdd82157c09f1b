"""The built-in pieces in pieces/ are valid, sensible and safe to ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reflection import constants as c
from reflection.models import Code
from reflection.pieces import check_piece_edit, load_piece_file, parse_piece_yaml, validate_piece
from reflection.secrets import find_secrets
from reflection.shipped import BUILTIN_PIECES_DIR

PIECES_DIR = BUILTIN_PIECES_DIR
BUILTINS = sorted(PIECES_DIR.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    return parse_piece_yaml(load_piece_file(path))


def test_the_three_promised_pieces_ship() -> None:
    """default, research-report and bug-triage are built in, with only .yaml pieces beside them."""
    assert {"default", "research-report", "bug-triage"} <= {p.stem for p in BUILTINS}
    assert {p.suffix for p in PIECES_DIR.iterdir()} <= {".yaml", ".md"}


@pytest.mark.parametrize("path", BUILTINS, ids=[p.stem for p in BUILTINS])
def test_builtin_parses_and_validates_with_its_stem(path: Path) -> None:
    """Every built-in piece parses under the limits and validates with its file stem."""
    assert c.SLUG_RE.fullmatch(path.stem)
    validate_piece(_load(path), expected_name=path.stem)


@pytest.mark.parametrize("path", BUILTINS, ids=[p.stem for p in BUILTINS])
def test_builtin_is_fully_specified(path: Path) -> None:
    """Each movement states persona, multi-line instruction, edit, mode, tools and rules."""
    data = _load(path)
    assert isinstance(data.get("description"), str) and data["description"]
    assert isinstance(data.get("max_movements"), int)
    assert data.get("initial_movement") in {m["name"] for m in data["movements"]}
    for m in data["movements"]:
        assert m["persona"] and "\n" in m["instruction"].strip(), m["name"]
        assert isinstance(m["edit"], bool) and m["required_permission_mode"] in c.PERMISSION_MODES
        assert m["allowed_tools"] and m["rules"], m["name"]
        if m["edit"]:
            assert m["required_permission_mode"] != "readonly", m["name"]


@pytest.mark.parametrize("path", BUILTINS, ids=[p.stem for p in BUILTINS])
def test_builtin_routes_every_movement_and_can_complete(path: Path) -> None:
    """Every movement is reachable from the initial one, and COMPLETE is reachable."""
    data = _load(path)
    edges = {m["name"]: {r["next"] for r in m["rules"]} for m in data["movements"]}
    seen, todo = set(), [data["initial_movement"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += edges.get(name, set())
    assert set(edges) <= seen
    assert "COMPLETE" in seen


@pytest.mark.parametrize("path", BUILTINS, ids=[p.stem for p in BUILTINS])
def test_builtin_holds_no_secret_and_is_unchanged_against_itself(path: Path) -> None:
    """A built-in never trips the secret detector, and an identical edit is piece_unchanged."""
    text = load_piece_file(path)
    assert find_secrets(text) == []
    assert check_piece_edit(text, text, piece_name=path.stem)[0] is Code.PIECE_UNCHANGED
