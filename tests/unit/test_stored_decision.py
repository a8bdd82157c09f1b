"""What a claim stores of the LLM's answer (SPEC §14): masked, with the raw text's secret
verdicts and the shown job; and what an earlier release stored still loads."""

from __future__ import annotations

import json

from reflection.evidence import ShownJob
from reflection.models import LlmDecision, LlmResult, MemoryChange, PieceEdit, Usage
from reflection.records import STORED_DECISION_VERSION, StoredDecision

KEY = "AKIAIOSFODNN7EXAMPLE"
SHOWN = {"job-1": ShownJob(request="Add a CSV export to the reports page")}


def _result() -> LlmResult:
    decision = LlmDecision(
        reasoning=f"the log printed {KEY}",
        memory_changes=[
            MemoryChange(
                op="add",
                name="deploy-key",
                description="Deploy key",
                type="reference",
                body=f"aws {KEY}",
                evidence=[f"export AWS_ACCESS_KEY_ID={KEY}"],
            ),
            MemoryChange(
                op="add",
                name="csv-export",
                description="Reports export CSV",
                type="project",
                body="The reports page has a CSV export.",
                evidence=["Add a CSV export to the reports page"],
            ),
        ],
        piece_edit=PieceEdit(yaml=f"name: default\nkey: {KEY}\n", summary="s"),
        confirmed=["csv-export"],
    )
    return LlmResult(
        decision=decision, raw=json.dumps({"key": KEY}), model="m", usage=Usage(tokens_in=5)
    )


def test_no_credential_is_stored_and_the_verdicts_are_kept() -> None:
    stored = StoredDecision.of(_result(), SHOWN)
    text = json.dumps(stored.to_json())
    assert KEY not in text
    assert stored.schema_version == STORED_DECISION_VERSION
    assert stored.secrets[0] and stored.secrets[1] == []
    assert stored.piece_secrets
    first = stored.result.decision.memory_changes[0]
    assert "[REDACTED" in (first.body or "") and "[REDACTED" in first.evidence[0]
    # What is not a credential is kept as the model wrote it.
    second = stored.result.decision.memory_changes[1]
    assert second == _result().decision.memory_changes[1]
    assert stored.result.decision.confirmed == ["csv-export"]
    assert stored.result.usage == Usage(tokens_in=5)


def test_it_round_trips_through_json() -> None:
    stored = StoredDecision.of(_result(), SHOWN)
    again = StoredDecision.load(json.loads(json.dumps(stored.to_json())))
    assert again == stored
    assert again.grounds.shown == SHOWN
    assert again.grounds.secrets == stored.secrets


def test_a_decision_stored_before_the_upgrade_loads_under_its_own_rules() -> None:
    """Version 1 stored the raw `LlmResult`: it loads, its secrets are found now (it is
    raw) and masked, and it has no shown job, so §11's rules do not apply to it."""
    old = _result().model_dump(mode="json")
    for ch in old["decision"]["memory_changes"]:
        del ch["evidence"]  # it predates the field
    loaded = StoredDecision.load(old)
    assert loaded.schema_version == 1
    assert loaded.shown is None and loaded.grounds.shown is None
    assert loaded.secrets[0] and loaded.secrets[1] == []
    assert KEY not in json.dumps(loaded.to_json())


def test_unknown_fields_of_a_newer_release_are_ignored() -> None:
    data = StoredDecision.of(_result(), SHOWN).to_json() | {"from_the_future": 1}
    assert StoredDecision.load(data).schema_version == STORED_DECISION_VERSION
