"""Hostile piece edits: YAML bombs, tags, documents, size, and every way to widen what an
agent may do (renames included) are refused with their code; the built-ins never change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from reflection.pieces import canonical_text
from tests.hostile.conftest import (
    BUILTIN_PIECES,
    Hostile,
    builtin_piece,
    edit,
    expect,
    movement,
    piece_yaml,
)

pytestmark = pytest.mark.integration

BASE = (BUILTIN_PIECES / "default.yaml").read_text()

BILLION_LAUGHS = """\
name: default
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
movements: [*g]
"""


def _rename(old: str, new: str, **grants: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        m = movement(d, old)
        m.update(name=new, **grants)
        for other in d["movements"]:
            for rule in other.get("rules") or []:
                if rule["next"] == old:
                    rule["next"] = new
        if d.get("initial_movement") == old:
            d["initial_movement"] = new

    return change


def _new_movement(**grants: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        m = {"name": "deploy", "persona": "ops", "instruction": "Ship it.", **grants}
        d["movements"].append(m)
        movement(d, "review")["rules"].insert(0, {"condition": "ship", "next": "deploy"})

    return change


def _set(name: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: movement(d, name).update(**values)


def _drop(name: str, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: movement(d, name).pop(key)


# (case id, new piece YAML, expected code)
EDITS: list[tuple[str, str, str]] = [
    ("billion-laughs", BILLION_LAUGHS, "piece_invalid"),
    (
        "python-tag",
        BASE + "\nx: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        "piece_invalid",
    ),
    ("local-tag", BASE.replace("edit: false", "edit: !grant false", 1), "piece_invalid"),
    ("merge-key", BASE.replace("    edit: false", "    <<: {edit: true}", 1), "piece_invalid"),
    ("multi-document", BASE + "\n---\nname: default\n", "piece_invalid"),
    ("huge", BASE + "\ndescription2: " + "x" * 300_000 + "\n", "piece_invalid"),
    ("deep-nesting", "name: default\nx: " + "[" * 200 + "]" * 200 + "\n", "piece_invalid"),
    (
        "duplicate-key",
        BASE.replace("    edit: false", "    edit: false\n    edit: true", 1),
        "piece_invalid",
    ),
    ("not-yaml", "name: default\nmovements: [\n", "piece_invalid"),
    ("not-a-mapping", "- name: default\n", "piece_invalid"),
    ("wrong-name", piece_yaml(lambda d: d.update(name="other")), "piece_invalid"),
    ("no-movements", piece_yaml(lambda d: d.update(movements=[])), "piece_invalid"),
    (
        "undefined-next",
        piece_yaml(lambda d: movement(d, "plan")["rules"][0].update(next="nowhere")),
        "piece_invalid",
    ),
    ("unknown-movement-key", piece_yaml(_set("plan", sudo=True)), "piece_invalid"),
    ("unknown-top-key", piece_yaml(lambda d: d.update(permissions="all")), "piece_invalid"),
    ("edit-as-string", piece_yaml(_set("plan", edit="true")), "piece_invalid"),
    ("mode-unknown", piece_yaml(_set("plan", required_permission_mode="root")), "piece_invalid"),
    (
        "duplicate-movement-names",
        piece_yaml(lambda d: d["movements"].append({**movement(d, "implement"), "name": "plan"})),
        "piece_invalid",
    ),
    ("edit-granted", piece_yaml(_set("review", edit=True)), "piece_escalation"),
    ("edit-granted-yes", BASE.replace("edit: false", "edit: yes", 1), "piece_escalation"),
    ("mode-raised", piece_yaml(_set("plan", required_permission_mode="full")), "piece_escalation"),
    (
        "mode-edit-to-full",
        piece_yaml(_set("implement", required_permission_mode="full")),
        "piece_escalation",
    ),
    (
        "tool-added",
        piece_yaml(_set("review", allowed_tools=["Read", "Glob", "Grep", "WebFetch"])),
        "piece_escalation",
    ),
    ("tools-removed", piece_yaml(_drop("plan", "allowed_tools")), "piece_escalation"),
    ("tools-emptied-to-null", piece_yaml(_set("plan", allowed_tools=None)), "piece_escalation"),
    (
        "rename-launders-edit",
        piece_yaml(_rename("review", "review2", edit=True)),
        "piece_escalation",
    ),
    (
        "rename-launders-tools",
        piece_yaml(_rename("plan", "planning", allowed_tools=["Read", "Bash"])),
        "piece_escalation",
    ),
    ("rename-implement", piece_yaml(_rename("implement", "build")), "piece_escalation"),
    ("new-movement-edit", piece_yaml(_new_movement(edit=True)), "piece_escalation"),
    ("new-movement-unrestricted", piece_yaml(_new_movement()), "piece_escalation"),
    (
        "new-movement-full",
        piece_yaml(_new_movement(allowed_tools=["Read"], required_permission_mode="full")),
        "piece_escalation",
    ),
    ("max-movements-grown", piece_yaml(lambda d: d.update(max_movements=13)), "piece_escalation"),
    ("max-movements-removed", piece_yaml(lambda d: d.pop("max_movements")), "piece_escalation"),
    (
        "secret-in-instruction",
        piece_yaml(_set("plan", instruction="Use token ghp_abcdefghijklmnopqrstuvwxyz0123456789.")),
        "secret_detected",
    ),
    ("unchanged-but-comments", "# reformatted\n" + piece_yaml(), "piece_unchanged"),
    (
        "narrowing-is-fine",
        piece_yaml(
            _set(
                "implement",
                allowed_tools=["Read", "Edit"],
                instruction="Implement the plan; run tests.",
            )
        ),
        "ok",
    ),
    ("rename-least-privileged-is-fine", piece_yaml(_rename("plan", "planning")), "ok"),
    (
        "new-readonly-movement-is-fine",
        piece_yaml(_new_movement(edit=False, allowed_tools=["Read"])),
        "ok",
    ),
]


@pytest.mark.parametrize(("case", "text", "code"), EDITS, ids=[e[0] for e in EDITS])
def test_piece_edit_gets_its_code(hostile: Hostile, case: str, text: str, code: str) -> None:
    """Each edit is judged with its exact code; only `ok` writes the user's copy (in
    `auto` mode: `guarded` would stage the renames and instruction edits here, see
    test_guarded_edits.py), as canonical YAML."""
    hostile.env.settings(piece_edit_mode="auto")
    report = hostile.run(f"job-{case}", edit(text))
    expect(report, [code])
    copy = hostile.user().piece_copy("default")
    if code == "ok":
        assert copy.read_text() == canonical_text(text)
        assert report.snapshot_dir is not None
        assert (report.snapshot_dir / "piece.after.yaml").read_text() == canonical_text(text)
    else:
        assert not copy.exists()
    assert (BUILTIN_PIECES / "default.yaml").read_text() == BASE


def test_escalation_is_judged_against_the_users_copy(hostile: Hostile) -> None:
    """A user copy that already narrowed `implement` cannot be widened back to the built-in."""
    narrowed = piece_yaml(_set("implement", allowed_tools=["Read", "Edit"]))
    copy = hostile.user().piece_copy("default")
    copy.parent.mkdir(parents=True)
    copy.write_text(narrowed)
    report = hostile.run("job-widen-back", edit(BASE))
    expect(report, ["piece_escalation"])
    assert copy.read_text() == narrowed


def test_max_movements_cannot_grow_in_steps(hostile: Hostile) -> None:
    """max_movements stays bounded by the current piece, not the built-in only."""
    hostile.env.settings(piece_edit_cooldown_hours=0)
    lower = piece_yaml(lambda d: d.update(max_movements=8))
    expect(hostile.run("job-mm-1", edit(lower)), ["ok"])
    back = piece_yaml(lambda d: d.update(max_movements=12))
    expect(hostile.run("job-mm-2", edit(back)), ["piece_escalation"])
    assert yaml.safe_load(hostile.user().piece_copy("default").read_text())["max_movements"] == 8
    assert builtin_piece()["max_movements"] == 12
