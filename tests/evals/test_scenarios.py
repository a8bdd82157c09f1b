"""The suite's own data, scored offline: every scenario's reference answer passes every
check, and every counterexample fails exactly the checks it names. This is what keeps a
scenario's expectations honest (neither unreachable nor toothless)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from reflection.evals.runner import judge_answer, prepare
from reflection.evals.scenario import CheckKind, Scenario, load_suite
from reflection.settings import Settings
from reflection.shipped import BUILTIN_PIECES_DIR, EVAL_SCENARIOS_DIR

SUITE = EVAL_SCENARIOS_DIR
SCENARIOS = load_suite(SUITE)
PIECES = BUILTIN_PIECES_DIR


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(pieces_dir=PIECES, _env_file=None)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_reference_answer_passes_every_check(scenario: Scenario, settings: Settings) -> None:
    failed = [
        f"{c.label}: {c.detail}"
        for c in judge_answer(scenario, settings, scenario.reference)
        if not c.passed
    ]
    assert failed == []


CASES = [(s, i) for s in SCENARIOS for i in range(len(s.counterexamples))]


@pytest.mark.parametrize("scenario,index", CASES, ids=[f"{s.id}-{i}" for s, i in CASES])
def test_counterexample_fails_exactly_its_checks(
    scenario: Scenario, index: int, settings: Settings
) -> None:
    bad = scenario.counterexamples[index]
    checks = judge_answer(scenario, settings, bad.answer)
    assert sorted({c.kind for c in checks if not c.passed}) == sorted(set(bad.fails)), bad.why


def test_the_suite_covers_what_it_promises() -> None:
    """At least 30 scenarios; every job outcome; every memory type learned; long noisy
    logs, injections, secrets and limits; and every check kind but `answer` (tested
    through the CLI) failed by some counterexample, so no check goes untested."""
    assert len(SCENARIOS) >= 30
    assert {s.job.outcome for s in SCENARIOS} == {"succeeded", "failed", "aborted"}
    learned = {ch.type for s in SCENARIOS for ch in s.reference.memory_changes if ch.op == "add"}
    assert learned == {"user", "feedback", "project", "reference"}
    assert {"injection", "secrets", "noisy", "limits", "abstain", "consolidate", "piece"} <= {
        s.category for s in SCENARIOS
    }
    assert any(s.noise and s.noise.bytes >= 5_000_000 for s in SCENARIOS)
    failed = {k for s in SCENARIOS for c in s.counterexamples for k in c.fails}
    assert failed == set(get_args(CheckKind)) - {"answer"}


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.expect.secrets], ids=lambda s: s.id)
def test_no_listed_secret_reaches_the_prompt(
    scenario: Scenario, settings: Settings, tmp_path: Path
) -> None:
    """The worker masks credentials before the model sees them, whatever their shape in
    the log (a URL, a header, a key block behind timestamps)."""
    prompt = prepare(scenario, settings, tmp_path).prompt
    assert [s for s in scenario.expect.secrets if s in prompt.system + prompt.user] == []


def test_each_scenarios_script_match_is_in_its_own_prompt_only(
    settings: Settings, tmp_path: Path
) -> None:
    """The scripted LLM answers a prompt by the first rule whose match it holds: each
    scenario's match (a job id line, or a consolidation's first entry with its record)
    must pick out that scenario's prompt and no other."""
    prompts = {s.id: prepare(s, settings, tmp_path / s.id).prompt.user for s in SCENARIOS}
    for s in SCENARIOS:
        holders = [sid for sid, user in prompts.items() if s.script_match in user]
        assert holders == [s.id], s.id


def test_the_rules_of_issue_21_have_scenarios() -> None:
    """Evidence, trust, duplicates and consolidation passes: at least 12 scenarios, with
    counterexamples the worker refuses for each new code."""
    new = [
        s for s in SCENARIOS if s.category in {"evidence", "trust", "duplicates", "consolidation"}
    ]
    assert len(new) >= 12
    assert {s.kind for s in new} == {"reflection", "consolidation"}
    assert all(s.counterexamples for s in new)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kind": "consolidation"}, "no job"),  # a pass has no job
        ({"job": None}, "needs its job"),  # a reflection has one
    ],
)
def test_a_scenario_kind_has_its_fields(extra: dict[str, object], message: str) -> None:
    base = SCENARIOS[0].model_dump(exclude_unset=True)
    if extra.get("job", 1) is None:
        base.pop("job")
        extra = {}
    with pytest.raises(ValueError, match=message):
        Scenario.model_validate(base | extra)
