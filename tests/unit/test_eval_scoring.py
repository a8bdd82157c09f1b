"""The evaluation suite's pure parts: scenario validation, matchers, the secret-leak
window, piece-field comparison, noise, and report arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reflection.evals.checks import Check, Judged, leaked, matches, score
from reflection.evals.fixture import noise_text
from reflection.evals.report import FORMAT, build_report, compare
from reflection.evals.runner import RunResult
from reflection.evals.scenario import (
    ChangeMatcher,
    Expect,
    Noise,
    SuiteError,
    load_scenario,
    load_suite,
)
from reflection.models import Code, LlmDecision, MemoryChange, Verdict
from reflection.shipped import EVAL_SCENARIOS_DIR

PIECE = """name: p
initial_movement: a
movements:
  - name: a
    instruction: old text
    rules: [{condition: done, next: COMPLETE}]
"""


def change(**kw: Any) -> MemoryChange:
    return MemoryChange.model_validate({"op": "add", "name": "n", **kw})


def verdict(ch: MemoryChange, code: Code = Code.OK) -> Verdict:
    return Verdict(kind="memory", name=ch.name, op=ch.op, accepted=code is Code.OK, code=code)


def judged(decision: LlmDecision, *codes: Code, memory: frozenset[str] = frozenset()) -> Judged:
    verdicts = [verdict(ch, code) for ch, code in zip(decision.memory_changes, codes, strict=True)]
    if decision.piece_edit is not None:
        verdicts.append(Verdict(kind="piece", name="p", op="edit", accepted=True, code=Code.OK))
    return Judged(decision, tuple(verdicts), PIECE, memory)


def failed(checks: list[Check]) -> list[str]:
    return [c.label for c in checks if not c.passed]


def test_matcher_fields_and_mentions_are_case_insensitive() -> None:
    ch = change(type="feedback", description="Use PyTest", body="fixtures in conftest")
    assert matches(ChangeMatcher(op="add", type="feedback", mentions=["pytest", "CONFTEST"]), ch)
    assert matches(ChangeMatcher(mentions_any=["nose", "pytest"]), ch)
    assert not matches(ChangeMatcher(op="update"), ch)
    assert not matches(ChangeMatcher(type="project"), ch)
    assert not matches(ChangeMatcher(mentions=["pytest", "unittest"]), ch)
    assert matches(ChangeMatcher(names=["x", "n"]), ch) and not matches(
        ChangeMatcher(names=["x"]), ch
    )


def test_leak_window_catches_a_partial_secret_but_not_a_short_common_prefix() -> None:
    secret = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    assert leaked(secret, ["token ends 2c6912E7710c83 here"])
    assert not leaked(secret, ["a GitHub token (ghp_...) from the vault"])
    assert leaked("short", ["a short one"])


def test_refused_change_does_not_count_as_learned() -> None:
    d = LlmDecision(reasoning="r", memory_changes=[change(type="feedback", body="pytest")])
    expect = Expect(changes=[ChangeMatcher(op="add", mentions=["pytest"])])
    checks = score(expect, judged(d, Code.EXISTS))
    assert failed(checks) == ["change[0]", "accepted"]
    assert "refused by the applier" in checks[1].detail
    allowed = Expect(changes=[], allowed_codes=["exists"])
    assert failed(score(allowed, judged(d, Code.EXISTS))) == []


def test_abstain_max_changes_and_memory_after() -> None:
    d = LlmDecision(
        reasoning="r",
        memory_changes=[
            change(op="update", name="keep", type="user", description="d", body="b"),
            MemoryChange(op="remove", name="old", merge_target="keep"),
        ],
    )
    expect = Expect.model_validate(
        {
            "abstain": False,
            "max_changes": 1,
            "memory_after": {"present": ["keep"], "absent": ["old"]},
        }
    )
    j = judged(d, Code.OK, Code.OK, memory=frozenset({"keep", "old"}))
    assert failed(score(expect, j)) == ["max_changes"]
    j = judged(d, Code.OK, Code.PROTECTED, memory=frozenset({"keep", "old"}))
    assert failed(score(expect, j)) == ["max_changes", "accepted", "memory_after"]


def test_piece_touch_compares_the_movement_field() -> None:
    new = PIECE.replace("old text", "review only the diff")
    d = LlmDecision.model_validate({"reasoning": "r", "piece_edit": {"yaml": new, "summary": "s"}})
    ok = Expect.model_validate(
        {
            "piece_edit": "expected",
            "piece_touches": [{"movement": "a", "field": "instruction", "mentions": ["diff"]}],
        }
    )
    assert failed(score(ok, judged(d))) == []
    unchanged = Expect.model_validate(
        {"piece_edit": "expected", "piece_touches": [{"movement": "a", "field": "rules"}]}
    )
    assert failed(score(unchanged, judged(d))) == ["piece_touch[0]"]
    missing = Expect.model_validate(
        {"piece_edit": "expected", "piece_touches": [{"movement": "zz", "field": "instruction"}]}
    )
    assert failed(score(missing, judged(d))) == ["piece_touch[0]"]
    assert failed(score(Expect(), judged(d))) == ["piece_edit"]  # forbidden by default


def test_expect_refuses_contradictions() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        Expect.model_validate({"abstain": True, "changes": [{"op": "add"}]})
    with pytest.raises(ValueError, match="piece_touches needs"):
        Expect.model_validate({"piece_touches": [{"field": "description"}]})


def test_scenario_files_are_strict(tmp_path: Path) -> None:
    src = EVAL_SCENARIOS_DIR / "learn-feedback-pytest.yaml"
    text = src.read_text()
    (tmp_path / "other-name.yaml").write_text(text)
    with pytest.raises(SuiteError, match="file stem"):
        load_scenario(tmp_path / "other-name.yaml")
    (tmp_path / "learn-feedback-pytest.yaml").write_text(text.replace("expect:", "expects:"))
    with pytest.raises(SuiteError, match="expects"):
        load_scenario(tmp_path / "learn-feedback-pytest.yaml")
    (tmp_path / "x.yaml").write_text("- a list")
    with pytest.raises(SuiteError, match="mapping"):
        load_scenario(tmp_path / "x.yaml")
    with pytest.raises(SuiteError, match="no such"):
        load_suite(tmp_path / "absent")


def test_noise_is_deterministic_and_exactly_sized() -> None:
    a = noise_text(Noise(bytes=100_000, seed=3))
    assert a == noise_text(Noise(bytes=100_000, seed=3)) != noise_text(Noise(bytes=100_000, seed=4))
    assert len(a.encode()) == 100_000 and a.endswith("\n")


def _result(sid: str, cat: str, passed: bool, latency: int) -> RunResult:
    checks = (Check("answer", True), Check("change", passed, "why", 0))
    return RunResult(sid, cat, 0, checks, "applied", 100, 10, latency, 1, 500)


def test_report_and_compare_arithmetic() -> None:
    a = build_report(
        [
            _result("s1", "learn", True, 100),
            _result("s2", "learn", True, 300),
            _result("s3", "abstain", False, 200),
        ],
        meta={"model": "A"},
    )
    assert a["format"] == FORMAT and a["model"] == "A"
    assert (
        a["summary"].items()
        >= {"runs": 3, "passed": 2, "pass_rate": 0.6667, "tokens_in": 300}.items()
    )
    assert a["summary"]["latency_ms_p50"] == 200 and a["summary"]["latency_ms_p95"] == 300
    assert a["categories"] == {
        "abstain": {"runs": 1, "passed": 0, "pass_rate": 0.0},
        "learn": {"runs": 2, "passed": 2, "pass_rate": 1.0},
    }
    (s3,) = [s for s in a["scenarios"] if s["id"] == "s3"]
    assert s3["runs"][0]["failed_checks"] == [{"check": "change[0]", "detail": "why"}]
    b = build_report(
        [
            _result("s1", "learn", False, 100),
            _result("s3", "abstain", True, 100),
            _result("s4", "new", True, 1),
        ],
        meta={"model": "B"},
    )
    diff = compare(a, b)
    assert diff["regressed"] == ["s1"] and diff["improved"] == ["s3"]
    assert diff["only_in_a"] == ["s2"] and diff["only_in_b"] == ["s4"]
    assert diff["categories"]["new"] == [None, 1.0]
