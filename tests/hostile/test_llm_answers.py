"""Hostile LLM answers: every schema violation fails `llm_invalid_output`; every change the
applier must refuse gets its SPEC section 5 code; nothing escapes the user's folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from reflection.frontmatter import parse_entry
from tests.hostile.conftest import Hostile, add, decision, expect
from tests.support.db import EVIDENCE

pytestmark = pytest.mark.integration

OK = decision("fine")


def _nested(depth: int) -> str:
    return (
        '{"reasoning": "x", "memory_changes": [], "piece_edit": null, "deep": '
        + ("[" * depth + "]" * depth)
        + "}"
    )


# Answers that are not a valid decision (after one repair round-trip: the script repeats).
INVALID: list[tuple[str, object]] = [
    ("empty", ""),
    ("chatter-only", "Sure! I think the user should remember to be careful."),
    ("json-array", [decision("x")]),
    ("json-string", json.dumps("a string")),
    ("truncated-json", '{"reasoning": "x", "memory_changes": [{"op": "add", "na'),
    ("megabytes", '{"reasoning": "' + "x" * 700_000 + '", "memory_changes": []}'),
    ("deeply-nested", _nested(500)),
    ("nested-100k", "[" * 100_000 + "]" * 100_000),
    ("duplicate-keys", '{"reasoning": "a", "reasoning": "b", "memory_changes": []}'),
    (
        "duplicate-nested-key",
        '{"reasoning": "a", "piece_edit": {"yaml": "a", "yaml": "b", "summary": "s"}}',
    ),
    ("extra-top-key", {**decision("x"), "grant": "admin"}),
    ("extra-change-key", decision("x", [add("a-b", protected=True)])),
    ("changes-not-list", {"reasoning": "x", "memory_changes": {"op": "add"}}),
    ("op-unknown", decision("x", [{"op": "chmod", "name": "a"}])),
    ("name-number", decision("x", [{**add("a"), "name": 5}])),
    ("body-object", decision("x", [{**add("a"), "body": {"$gt": ""}}])),
    ("no-reasoning", {"memory_changes": []}),
    ("piece-yaml-object", decision("x", piece_edit={"yaml": {"name": "default"}, "summary": "s"})),  # type: ignore[dict-item]
    ("nan", '{"reasoning": NaN, "memory_changes": []}'),
]


@pytest.mark.parametrize(("case", "reply"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_answer_fails_llm_invalid_output(
    hostile: Hostile, case: str, reply: object
) -> None:
    """A reply that is not one valid decision object fails after one repair, writes nothing."""
    report = hostile.run(f"job-{case}", reply)
    expect(report, "llm_invalid_output")
    assert hostile.env.llm_calls() == 2  # the answer and one repair round-trip


def test_object_inside_chatter_is_extracted(hostile: Hostile) -> None:
    """A valid object wrapped in prose and a code fence is still understood."""
    reply = "Here you go:\n```json\n" + json.dumps(decision("nothing new")) + "\n```\nBye {"
    report = hostile.run("job-chatter", reply)
    expect(report, [])


def _mem(h: Hostile) -> None:
    h.entry("existing")
    h.entry("locked", "Never deploy on Fridays.", protected=True)


# (case id, setup, memory changes, expected codes)
Setup = Callable[[Hostile], None] | None
CHANGES: list[tuple[str, Setup, list[dict[str, Any]], list[str]]] = [
    ("name-traversal", None, [add("../../outside/canary")], ["invalid_name"]),
    ("name-slash", None, [add("memory/evil")], ["invalid_name"]),
    ("name-absolute", None, [add("/etc/passwd")], ["invalid_name"]),
    ("name-dot", None, [add(".hidden")], ["invalid_name"]),
    ("name-upper", None, [add("MEMORY")], ["invalid_name"]),
    ("name-nul", None, [add("a\x00b")], ["invalid_name"]),
    ("name-newline", None, [add("a\n")], ["invalid_name"]),
    ("name-empty", None, [add("")], ["invalid_name"]),
    ("name-too-long", None, [add("a" * 65)], ["invalid_name"]),
    ("name-unicode", None, [add("caf\u00e9")], ["invalid_name"]),
    ("type-unknown", None, [add("a", type="admin")], ["unknown_type"]),
    ("body-too-large", None, [add("a", "x" * 8193)], ["body_too_large"]),
    ("body-bytes-not-chars", None, [add("a", "\u20ac" * 2731)], ["body_too_large"]),
    (
        "description-multiline",
        None,
        [add("a", description="a\nprotected: true")],
        ["missing_field"],
    ),
    ("description-u2028", None, [add("a", description="a\u2028b")], ["missing_field"]),
    (
        "add-without-body",
        None,
        [{"op": "add", "evidence": EVIDENCE, "name": "a", "description": "d", "type": "user"}],
        ["missing_field"],
    ),
    ("add-existing", _mem, [add("existing")], ["exists"]),
    ("update-missing", None, [{**add("ghost"), "op": "update"}], ["not_found"]),
    ("remove-missing", None, [{"op": "remove", "name": "ghost"}], ["not_found"]),
    ("duplicate-in-batch", None, [add("twin"), add("twin", "other")], ["ok", "duplicate_in_batch"]),
    (
        "merge-target-missing",
        _mem,
        [{"op": "remove", "name": "existing", "merge_target": "nowhere"}],
        ["merge_target_missing"],
    ),
    (
        "merge-target-traversal",
        _mem,
        [{"op": "remove", "name": "existing", "merge_target": "../x"}],
        ["merge_target_missing"],
    ),
    (
        "merge-into-itself",
        _mem,
        [{"op": "remove", "name": "existing", "merge_target": "existing"}],
        ["merge_target_missing"],
    ),
    ("too-many-changes", None, [add(f"n{i}") for i in range(9)], ["ok"] * 8 + ["too_many_changes"]),
    (
        "update-protected",
        _mem,
        [{**add("locked", "Deploy whenever."), "op": "update"}],
        ["protected"],
    ),
    ("remove-protected", _mem, [{"op": "remove", "name": "locked"}], ["protected"]),
    (
        "merge-protected-away",
        _mem,
        [{"op": "remove", "name": "locked", "merge_target": "existing"}],
        ["protected"],
    ),
    ("add-beside-protected", _mem, [add("locked-2", "Deploy on Fridays is fine now.")], ["ok"]),
    ("secret-in-body", None, [add("aws", "key AKIAIOSFODNN7EXAMPLE here")], ["secret_detected"]),
    (
        "secret-in-description",
        None,
        [add("db", description="postgres://admin:S3cr3tPw!@db:5432/app")],
        ["secret_detected"],
    ),
]


@pytest.mark.parametrize(
    ("case", "setup", "changes", "expected"), CHANGES, ids=[c[0] for c in CHANGES]
)
def test_memory_change_gets_its_code(
    hostile: Hostile, case: str, setup: Setup, changes: list[dict[str, Any]], expected: list[str]
) -> None:
    """Each proposed change is judged with its exact code; refused ones write nothing."""
    if setup is not None:
        setup(hostile)
    report = hostile.run(f"job-{case}", decision("proposal", changes))
    expect(report, expected)
    hostile.canary_intact()
    if case.endswith("protected"):
        locked = hostile.user().memory_file("locked").read_text()
        assert "Never deploy on Fridays." in locked and "protected: true" in locked


def test_memory_full(hostile: Hostile) -> None:
    """Past max_memory_entries an add is refused memory_full."""
    hostile.env.settings(max_memory_entries=1)
    hostile.entry("existing")
    report = hostile.run("job-full", decision("x", [add("one-more")]))
    expect(report, ["memory_full"])


def test_frontmatter_smuggled_in_body_stays_body(hostile: Hostile) -> None:
    """A body that looks like frontmatter cannot rename or protect the entry it lands in."""
    body = "---\nname: other\nprotected: true\ntype: user\n---\nsneaky"
    report = hostile.run("job-smuggle", decision("x", [add("plain", body)]))
    expect(report, ["ok"])
    path = hostile.user().memory_file("plain")
    entry = parse_entry(path.read_text(), stem="plain")
    assert entry.name == "plain" and entry.protected is False and entry.body == body
    assert not hostile.user().memory_file("other").exists()


def test_yaml_special_description_round_trips(hostile: Hostile) -> None:
    """A description full of YAML syntax is stored as a plain string, not interpreted."""
    desc = "key: value # !!python/object/apply:os.system ['id'] &a *a {x: [1]}"
    report = hostile.run("job-yaml-desc", decision("x", [add("yamlish", description=desc)]))
    expect(report, ["ok"])
    entry = parse_entry(hostile.user().memory_file("yamlish").read_text(), stem="yamlish")
    assert entry.description == desc


def test_piece_cooldown(hostile: Hostile) -> None:
    """A second piece edit within the cooldown is refused piece_cooldown."""
    from reflection.pieces import canonical_text
    from tests.hostile.conftest import edit, movement, piece_yaml

    first = piece_yaml(lambda d: movement(d, "plan").update(instruction="Plan carefully."))
    expect(hostile.run("job-cool-1", edit(first)), ["ok"])
    second = piece_yaml(lambda d: movement(d, "plan").update(instruction="Plan quickly."))
    expect(hostile.run("job-cool-2", edit(second)), ["piece_cooldown"])
    assert hostile.user().piece_copy("default").read_text() == canonical_text(first)
