"""The suite's own data, scored offline: every scenario's reference answer passes every
check, and every counterexample fails exactly the checks it names. This is what keeps a
scenario's expectations honest (neither unreachable nor toothless)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflection.evals.runner import judge_answer
from reflection.evals.scenario import Scenario, load_suite
from reflection.settings import Settings

SUITE = Path(__file__).resolve().parents[2] / "evals" / "scenarios"
SCENARIOS = load_suite(SUITE)
PIECES = Path(__file__).resolve().parents[2] / "pieces"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(pieces_dir=PIECES, _env_file=None)  # type: ignore[call-arg]


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
