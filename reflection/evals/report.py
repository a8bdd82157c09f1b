"""The evaluation report: a JSON document to keep and compare, built from run results."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reflection.evals.runner import RunResult
from reflection.secrets import mask_secrets

FORMAT = "reflection-eval/1"


class ReportError(ValueError):
    """A file that is not an evaluation report."""


def _rate(passed: int, runs: int) -> float:
    return round(passed / runs, 4) if runs else 0.0


def _p(values: Sequence[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def _run(r: RunResult) -> dict[str, Any]:
    return {
        "repeat": r.repeat,
        "passed": r.passed,
        "outcome": r.outcome,
        # A detail may quote a proposed name or text: the report keeps credentials masked.
        "failed_checks": [{"check": c.label, "detail": mask_secrets(c.detail)} for c in r.failures],
        "checks": len(r.checks),
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "latency_ms": r.latency_ms,
        "llm_attempts": r.llm_attempts,
        "prompt_chars": r.prompt_chars,
        # The model's answer, to read why a check failed; credentials stay masked.
        "decision": None if r.decision is None else _masked(r.decision.model_dump(mode="json")),
    }


def build_report(results: Sequence[RunResult], *, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: `meta` (model, endpoint, suite, repeat, filter), a summary, pass
    rates per category, and every run of every scenario with the checks it failed."""
    by_scenario: dict[str, list[RunResult]] = defaultdict(list)
    by_category: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        by_scenario[r.scenario_id].append(r)
        by_category[r.category].append(r)
    return {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
        "summary": _summary(results),
        "categories": {cat: _category(rs) for cat, rs in sorted(by_category.items())},
        "scenarios": [_scenario(sid, rs) for sid, rs in by_scenario.items()],
    }


def _summary(results: Sequence[RunResult]) -> dict[str, Any]:
    ok = [r for r in results if r.outcome not in ("llm_unavailable", "llm_invalid_output")]
    latencies = [r.latency_ms for r in ok]
    return {
        "runs": len(results),
        "passed": sum(r.passed for r in results),
        "pass_rate": _rate(sum(r.passed for r in results), len(results)),
        "tokens_in": sum(r.tokens_in for r in results),
        "tokens_out": sum(r.tokens_out for r in results),
        "latency_ms_p50": _p(latencies, 0.5),
        "latency_ms_p95": _p(latencies, 0.95),
    }


def _category(rs: Sequence[RunResult]) -> dict[str, Any]:
    passed = sum(r.passed for r in rs)
    return {"runs": len(rs), "passed": passed, "pass_rate": _rate(passed, len(rs))}


def _scenario(sid: str, rs: Sequence[RunResult]) -> dict[str, Any]:
    return {
        "id": sid,
        "category": rs[0].category,
        "pass_rate": _rate(sum(r.passed for r in rs), len(rs)),
        "tokens_in": round(statistics.fmean(r.tokens_in for r in rs)),
        "tokens_out": round(statistics.fmean(r.tokens_out for r in rs)),
        "latency_ms": round(statistics.fmean(r.latency_ms for r in rs)),
        "runs": [_run(r) for r in rs],
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReportError(f"{path}: not a {FORMAT} report")
    return data


def _category_rate(report: dict[str, Any], cat: str) -> float | None:
    c = report["categories"].get(cat)
    return None if c is None else float(c["pass_rate"])


def _scenario_changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[str]]:
    """The scenarios that got worse or better, and those only one report has."""
    sa = {s["id"]: s for s in a["scenarios"]}
    sb = {s["id"]: s for s in b["scenarios"]}
    common = [i for i in sb if i in sa]
    return {
        "regressed": [i for i in common if sb[i]["pass_rate"] < sa[i]["pass_rate"]],
        "improved": [i for i in common if sb[i]["pass_rate"] > sa[i]["pass_rate"]],
        "only_in_a": sorted(set(sa) - set(sb)),
        "only_in_b": sorted(set(sb) - set(sa)),
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from report `a` to report `b`: pass rates overall and per category,
    the scenarios that got worse or better, and the cost."""
    cats = sorted(set(a["categories"]) | set(b["categories"]))
    return {
        "a": {k: a.get(k) for k in ("model", "created_at")},
        "b": {k: b.get(k) for k in ("model", "created_at")},
        "overall": [a["summary"]["pass_rate"], b["summary"]["pass_rate"]],
        "categories": {cat: [_category_rate(a, cat), _category_rate(b, cat)] for cat in cats},
        **_scenario_changes(a, b),
        "cost": {
            k: [a["summary"][k], b["summary"][k]]
            for k in ("tokens_in", "tokens_out", "latency_ms_p50", "latency_ms_p95")
        },
        "runs": [a["summary"]["runs"], b["summary"]["runs"]],
    }
