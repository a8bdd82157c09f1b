"""Instruction text is privileged (issue 22, item 7): in `guarded` mode, the default, a
piece edit that rewrites what a movement able to edit files or run a shell is told, or
that removes a movement or a route into one, is staged for an operator; other edits are
written. `auto` writes every accepted edit, `review` stages every one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from reflection import storage
from reflection.pieces import canonical_text
from reflection.settings import Settings
from tests.hostile.conftest import Hostile, builtin_piece, edit, expect, movement

pytestmark = pytest.mark.integration

Change = Callable[[dict[str, Any]], object]


def _yaml(change: Change, piece: str = "default") -> str:
    data = builtin_piece(piece)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def _append(name: str, key: str, text: str) -> Change:
    return lambda d: movement(d, name).update({key: movement(d, name)[key] + text})


def _drop_review(d: dict[str, Any]) -> None:
    """Remove the review movement; what led to it now completes."""
    d["movements"] = [m for m in d["movements"] if m["name"] != "review"]
    for m in d["movements"]:
        for rule in m.get("rules") or []:
            if rule["next"] == "review":
                rule["next"] = "COMPLETE"


def _drop_route_to_fix(d: dict[str, Any]) -> None:
    rules = movement(d, "review")["rules"]
    movement(d, "review")["rules"] = [r for r in rules if r["next"] != "fix"]


def _new_entry(d: dict[str, Any]) -> None:
    d["initial_movement"] = "implement"


def _pending(h: Hostile) -> list[Any]:
    return storage.list_proposals(engine=h.env.engine, status="pending", user_id="alice")


# (case, piece, change, why it is staged, or None: it is written)
CASES: list[tuple[str, str, Change, str | None]] = [
    ("implement-instruction", "default",
     _append("implement", "instruction", "\nAlso run the deploy script.\n"),
     "instruction of movement 'implement' (can edit files and can run a shell) changed"),
    ("fix-persona", "default", lambda d: movement(d, "fix").update(persona="hurried fixer"),
     "persona of movement 'fix' (can edit files and can run a shell) changed"),
    ("shell-only-movement", "bug-triage",
     _append("locate", "instruction", "\nLook in vendor/ too.\n"),
     "instruction of movement 'locate' (can run a shell) changed"),
    ("review-removed", "default", _drop_review, "movement 'review' removed"),
    ("route-removed", "default", _drop_route_to_fix, "route review -> fix removed"),
    ("entry-moved", "default", _new_entry, "route <start> -> plan removed"),
    ("readonly-instruction", "default",
     _append("plan", "instruction", "\nName the risks first.\n"), None),
    ("readonly-persona", "default", lambda d: movement(d, "review").update(persona="strict"),
     None),
    ("rule-condition", "default",
     lambda d: movement(d, "implement")["rules"][0].update(condition="the change is done"),
     None),
    ("description", "default", lambda d: d.update(description="Plan, build, check, fix"),
     None),
    ("web-only-movement", "research-report",
     _append("research", "instruction", "\nPrefer primary sources.\n"), None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "piece", "change", "staged"), CASES, ids=[c[0] for c in CASES])
def test_guarded_mode_stages_only_privileged_edits(
    hostile: Hostile, case: str, piece: str, change: Change, staged: str | None
) -> None:
    assert Settings.model_fields["piece_edit_mode"].default == "guarded"
    text = _yaml(change, piece)
    report = hostile.run(f"job-{case}", edit(text), piece=piece)
    expect(report, ["ok"])
    copy = hostile.user().piece_copy(piece)
    [verdict] = report.verdicts
    if staged is None:
        assert copy.read_text() == canonical_text(text)
        assert _pending(hostile) == []
        assert verdict.detail == ""
    else:
        assert not copy.exists(), "a privileged edit was written without review"
        [proposal] = _pending(hostile)
        assert proposal.piece_name == piece
        assert verdict.detail.startswith("staged for review") and staged in verdict.detail


def test_a_movement_with_no_tool_list_can_run_a_shell(hostile: Hostile) -> None:
    """A user's copy whose `plan` has no `allowed_tools` (every tool) or `bash` in any
    case: rewriting its instruction is staged."""
    hostile.env.settings(piece_edit_cooldown_hours=0)
    copy = hostile.user().piece_copy("default")
    copy.parent.mkdir(parents=True)
    for i, tools in enumerate((None, ["Read", "bash"], ["BASH"])):
        base = builtin_piece()
        plan = movement(base, "plan")
        plan.pop("allowed_tools")
        if tools is not None:
            plan["allowed_tools"] = tools
        copy.write_text(yaml.safe_dump(base, sort_keys=False))
        plan["instruction"] += f"\nVariant {i}.\n"
        report = hostile.run(f"job-tools-{i}", edit(yaml.safe_dump(base, sort_keys=False)))
        expect(report, ["ok"])
        assert "movement 'plan' (can run a shell)" in report.verdicts[0].detail
        assert "Variant" not in copy.read_text()
    assert len(_pending(hostile)) == 3


@pytest.mark.parametrize(("mode", "written"), [("auto", True), ("review", False)])
def test_auto_writes_and_review_stages_every_edit(
    hostile: Hostile, mode: str, written: bool
) -> None:
    hostile.env.settings(piece_edit_mode=mode)
    for job, change in (
        ("privileged", _append("implement", "instruction", "\nKeep commits small.\n")),
        ("plain", _append("plan", "instruction", "\nName the risks first.\n")),
    ):
        hostile.env.settings(piece_edit_cooldown_hours=0)
        text = _yaml(change)
        expect(hostile.run(f"job-{mode}-{job}", edit(text)), ["ok"])
        copy = hostile.user().piece_copy("default")
        assert (copy.exists() and copy.read_text() == canonical_text(text)) is written
    assert len(_pending(hostile)) == (0 if written else 2)


def test_a_staged_edit_is_approved_and_written_canonically(hostile: Hostile) -> None:
    """The staged proposal holds the canonical text; approving it writes that text."""
    from datetime import UTC, datetime

    from reflection.proposals import approve_proposal

    text = _yaml(_append("implement", "instruction", "\nKeep commits small.\n"))
    expect(hostile.run("job-approve", edit(text)), ["ok"])
    [proposal] = _pending(hostile)
    full = storage.get_proposal(engine=hostile.env.engine, proposal_id=proposal.id)
    assert full is not None and full.yaml == canonical_text(text)
    approve_proposal(
        settings=hostile.env.deps.settings,
        engine=hostile.env.engine,
        redis_client=hostile.env.deps.redis,
        proposal_id=proposal.id,
        now=datetime.now(UTC),
    )
    assert hostile.user().piece_copy("default").read_text() == canonical_text(text)
