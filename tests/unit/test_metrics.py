"""The run metrics: their labels, what one run adds, and the ports a worker tries."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from reflection import metrics
from reflection.models import Code, Usage, Verdict
from tasks.exporter import forks_children


def _verdict(op: str, code: Code, kind: str = "memory") -> Verdict:
    return Verdict(kind=kind, name="n", op=op, accepted=code is Code.OK, code=code)


@pytest.mark.parametrize(
    ("verdict", "labels"),
    [(_verdict("add", Code.OK), ("add", "true", "ok")),
     (_verdict("update", Code.PROTECTED), ("update", "false", "protected")),
     (_verdict("remove", Code.NOT_FOUND), ("remove", "false", "not_found")),
     (_verdict("edit", Code.PIECE_ESCALATION, "piece"), ("edit", "false", "piece_escalation"))],
)  # fmt: skip
def test_change_labels(verdict: Verdict, labels: tuple[str, str, str]) -> None:
    """A judged change is counted by its op, whether it was accepted, and its code."""
    assert metrics.change_labels(verdict) == labels


def test_token_counts_by_direction() -> None:
    """Tokens are counted in, out and cached (cached are part of in)."""
    usage = Usage(tokens_in=1200, tokens_out=80, tokens_cached=1024)
    assert metrics.token_counts(usage) == (("in", 1200), ("out", 80), ("cached", 1024))


@pytest.mark.parametrize(
    ("port", "tries", "ports"),
    [(9808, 3, [9808, 9809, 9810]),
     (9808, 1, [9808]),
     (65534, 16, [65534, 65535])],
)  # fmt: skip
def test_candidate_ports(port: int, tries: int, ports: list[int]) -> None:
    """A worker tries its port, then the next ones up, never past 65535."""
    assert list(metrics.candidate_ports(port, tries)) == ports


@pytest.mark.parametrize(
    ("pool", "forks"),
    [("prefork", True), ("processes", True), ("threads", False), ("solo", False)],
)
def test_only_prefork_serves_its_children_through_a_directory(pool: str, forks: bool) -> None:
    """A prefork worker's tasks run in children (multiprocess mode); others serve their own."""
    assert forks_children(pool) is forks


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _counts() -> dict[str, float]:
    applied = {"kind": "reflection", "outcome": "applied", "error_code": ""}
    return {
        "runs": _sample("reflection_runs_total", **applied),
        "ok": _sample("reflection_changes_total", op="add", accepted="true", code="ok"),
        "bad": _sample("reflection_changes_total", op="add", accepted="false", code="exists"),
        "cached": _sample("reflection_llm_tokens_total", direction="cached"),
        "runs_s": _sample("reflection_run_duration_seconds_count"),
        "llm_s": _sample("reflection_llm_duration_seconds_count"),
    }


def test_a_run_is_counted_with_its_changes_tokens_and_durations() -> None:
    """One ended run adds one to its outcome, one per judged change, its tokens and one
    observation to each duration histogram it had."""
    before = _counts()
    metrics.record_run(
        kind="reflection",
        outcome="applied",
        error_code=None,
        seconds=1.5,
        usage=Usage(tokens_in=2000, tokens_out=90, tokens_cached=1024),
        llm_seconds=1.2,
        verdicts=[_verdict("add", Code.OK), _verdict("add", Code.EXISTS)],
    )
    after = _counts()
    assert {k: after[k] - before[k] for k in before} == {
        "runs": 1,
        "ok": 1,
        "bad": 1,
        "cached": 1024,
        "runs_s": 1,
        "llm_s": 1,
    }


def test_a_failed_run_is_counted_with_its_code_and_no_llm_duration_without_a_call() -> None:
    """A failure carries its error code as a label; a run that never asked the LLM adds
    no LLM duration."""
    labels = {"kind": "reflection", "outcome": "failed", "error_code": "job_not_found"}
    runs, llm = (
        _sample("reflection_runs_total", **labels),
        _sample("reflection_llm_duration_seconds_count"),
    )
    metrics.record_run(
        kind="reflection",
        outcome="failed",
        error_code="job_not_found",
        seconds=0.01,
        usage=Usage(),
    )
    assert _sample("reflection_runs_total", **labels) == runs + 1
    assert _sample("reflection_llm_duration_seconds_count") == llm


def test_the_mode_cannot_change_once_something_was_recorded() -> None:
    """Switching to multiprocess mode after recording would split a process's numbers
    between two stores: refused."""
    metrics.observe_lock_wait(0.0)
    with pytest.raises(RuntimeError, match="before the multiprocess mode"):
        metrics.use_multiprocess_dir("/nonexistent")
