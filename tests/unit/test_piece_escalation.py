"""The escalation rule: a piece edit may reword and reroute, never widen permissions."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reflection import constants as c
from reflection.models import Code
from reflection.pieces import check_piece_edit, escalations, validate_piece

UNSET: Any = object()


def mv(
    name: str,
    *,
    edit: Any = UNSET,
    mode: Any = UNSET,
    tools: Any = UNSET,
    instruction: str = "Do the step.",
    nxt: str = "COMPLETE",
) -> dict[str, Any]:
    """A movement; keys left UNSET are absent (edit false, readonly, unrestricted)."""
    m: dict[str, Any] = {"name": name, "persona": "agent", "instruction": instruction}
    for key, value in (
        ("edit", edit),
        ("required_permission_mode", mode),
        ("allowed_tools", tools),
    ):
        if value is not UNSET:
            m[key] = value
    m["rules"] = [{"condition": "done", "next": nxt}]
    return m


def piece(*movements: dict[str, Any], limit: Any = 8) -> dict[str, Any]:
    p: dict[str, Any] = {"name": "p", "description": "d", "movements": list(movements)}
    if limit is not UNSET:
        p["max_movements"] = limit
    return p


PLAN = mv("plan", edit=False, mode="readonly", tools=["Read", "Grep"])
CODE = mv("implement", edit=True, mode="edit", tools=["Read", "Grep", "Edit", "Bash"])
OLD = piece(PLAN, CODE)


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return base | changes


CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    # allowed: wording, routing, order, narrowing
    ("instruction only", OLD, piece(with_(PLAN, instruction="Plan with care."), CODE), []),
    ("persona and rules", OLD, piece(with_(PLAN, persona="architect", rules=[]), CODE), []),
    ("reordered", OLD, piece(CODE, PLAN), []),
    ("movement removed", OLD, piece(PLAN), []),
    ("edit true -> false", OLD, piece(PLAN, with_(CODE, edit=False)), []),
    ("mode lowered", OLD, piece(PLAN, with_(CODE, required_permission_mode="readonly")), []),
    ("tool removed", OLD, piece(PLAN, with_(CODE, allowed_tools=["Read", "Edit"])), []),
    ("tools emptied", OLD, piece(with_(PLAN, allowed_tools=[]), CODE), []),
    ("max_movements lowered", OLD, piece(PLAN, CODE, limit=4), []),
    ("max_movements added", piece(PLAN, CODE, limit=UNSET), piece(PLAN, CODE, limit=50), []),
    # widening an existing movement
    ("edit false -> true", OLD, piece(with_(PLAN, edit=True), CODE),
     ["movement 'plan': edit false -> true"]),
    ("edit absent -> true", piece(mv("plan")), piece(mv("plan", edit=True)),
     ["movement 'plan': edit false -> true"]),
    ("mode readonly -> edit", OLD, piece(with_(PLAN, required_permission_mode="edit"), CODE),
     ["movement 'plan': required_permission_mode readonly -> edit"]),
    ("mode edit -> full", OLD, piece(PLAN, with_(CODE, required_permission_mode="full")),
     ["movement 'implement': required_permission_mode edit -> full"]),
    ("mode absent -> edit", piece(mv("plan")), piece(mv("plan", mode="edit")),
     ["movement 'plan': required_permission_mode readonly -> edit"]),
    ("new tool", OLD, piece(with_(PLAN, allowed_tools=["Read", "Grep", "Bash", "WebFetch"]), CODE),
     ["movement 'plan': gains tools Bash, WebFetch"]),
    ("allowed_tools removed", OLD, piece(mv("plan", edit=False, mode="readonly"), CODE),
     ["movement 'plan': allowed_tools removed (would allow every tool)"]),
    ("unrestricted stays free", piece(mv("plan")), piece(mv("plan", tools=["Bash"])), []),
    # new or renamed movements: bounded by the least privileged old movement
    ("rename launders permissions", OLD, piece(PLAN, with_(CODE, name="build")),
     ["new movement 'build': edit false -> true",
      "new movement 'build': required_permission_mode readonly -> edit",
      "new movement 'build': gains tools Bash, Edit"]),
    ("new movement within the floor", OLD,
     piece(PLAN, CODE, mv("check", edit=False, mode="readonly", tools=["Grep"])), []),
    ("new movement with defaults", OLD,
     piece(PLAN, CODE, mv("check", tools=["Read", "Grep"])), []),
    ("new movement unrestricted", OLD, piece(PLAN, CODE, mv("check", tools=UNSET)),
     ["new movement 'check': allowed_tools removed (would allow every tool)"]),
    ("new movement tool outside intersection", OLD,
     piece(PLAN, CODE, mv("check", tools=["Read", "Edit"])),
     ["new movement 'check': gains tools Edit"]),
    ("new movement may edit when all old could",
     piece(with_(PLAN, edit=True, required_permission_mode="edit"), CODE),
     piece(with_(PLAN, edit=True, required_permission_mode="edit"), CODE,
           mv("fix", edit=True, mode="edit", tools=["Read"])), []),
    ("unrestricted old movement does not widen the intersection",
     piece(PLAN, mv("free")), piece(PLAN, mv("free"), mv("extra", tools=["Read", "Bash"])),
     ["new movement 'extra': gains tools Bash"]),
    ("all old unrestricted: new may be too", piece(mv("a"), mv("b")),
     piece(mv("a"), mv("b"), mv("c")), []),
    # max_movements
    ("max_movements raised", OLD, piece(PLAN, CODE, limit=9), ["max_movements 8 -> 9"]),
    ("max_movements removed", OLD, piece(PLAN, CODE, limit=UNSET),
     ["max_movements removed (was 8)"]),
    # several at once: all reported
    ("everything at once", OLD,
     piece(with_(PLAN, edit=True, allowed_tools=["Read", "Grep", "Bash"]), CODE, limit=20),
     ["movement 'plan': edit false -> true", "movement 'plan': gains tools Bash",
      "max_movements 8 -> 20"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_escalations(old: dict[str, Any], new: dict[str, Any], expected: list[str]) -> None:
    """Each widening is reported in words; rewording and narrowing report nothing."""
    validate_piece(old, expected_name="p")
    validate_piece(new, expected_name="p")
    assert escalations(old, new) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_piece_edit_agrees(
    old: dict[str, Any], new: dict[str, Any], expected: list[str]
) -> None:
    """Through YAML, check_piece_edit says piece_escalation with the joined list, or ok."""
    code, detail = check_piece_edit(yaml.safe_dump(old), yaml.safe_dump(new), piece_name="p")
    assert (code, detail) == (
        (Code.PIECE_ESCALATION, "; ".join(expected)) if expected else (Code.OK, "")
    )


# --- properties ----------------------------------------------------------------------

TOOLS = ["Read", "Glob", "Grep", "Edit", "Write", "Bash", "WebSearch", "WebFetch"]
movements = st.builds(
    lambda name, edit, mode, tools: mv(name, edit=edit, mode=mode, tools=tools),
    name=st.sampled_from(["plan", "implement", "review", "fix", "report"]),
    edit=st.sampled_from([UNSET, True, False]),
    mode=st.sampled_from([UNSET, *c.PERMISSION_MODES]),
    tools=st.one_of(st.just(UNSET), st.lists(st.sampled_from(TOOLS), unique=True)),
)
pieces = st.builds(
    lambda ms, limit: piece(*ms, limit=limit),
    st.lists(movements, min_size=1, max_size=4, unique_by=lambda m: m["name"]),
    st.sampled_from([UNSET, 1, 5, 20]),
)


def narrowed(m: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    out = dict(m)
    if data.draw(st.booleans()):
        out["edit"] = False
    if data.draw(st.booleans()):
        out["required_permission_mode"] = "readonly"
    if "allowed_tools" in out:
        out["allowed_tools"] = [t for t in out["allowed_tools"] if data.draw(st.booleans())]
    return out


@settings(max_examples=60, deadline=None, database=None)
@given(pieces)
def test_a_piece_never_escalates_against_itself(p: dict[str, Any]) -> None:
    """The same piece, however permissive, is never an escalation of itself."""
    assert escalations(p, p) == []


@settings(max_examples=60, deadline=None, database=None)
@given(pieces, st.data())
def test_narrowing_never_escalates(p: dict[str, Any], data: st.DataObject) -> None:
    """Turning edit off, lowering modes, dropping tools or movements is always allowed."""
    kept = [narrowed(m, data) for m in p["movements"] if data.draw(st.booleans())] or p[
        "movements"
    ][:1]
    new = piece(*kept, limit=p.get("max_movements", UNSET))
    assert escalations(p, new) == []
