"""The Grafana dashboard and the alert rules under deploy/ are built on the metrics the
workers serve: every name they query is one `reflection.metrics` documents and records."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from reflection import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "reflection-worker.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
_NAME = re.compile(r"\breflection_[a-z_]+")
_SERIES = re.compile(r"_(bucket|count|sum)$")


def documented() -> set[str]:
    """The metric names the module's docstring table lists."""
    return set(re.findall(r"^\s+(reflection_[a-z_]+)\s", metrics.__doc__ or "", re.MULTILINE))


def recorded() -> set[str]:
    """The names of the instruments the workers record, and the scraped queue length."""
    names = {"reflection_queue_length"}  # tasks.exporter.QueueLength, at each scrape
    built = metrics._instruments()
    for field in fields(built):
        for family in getattr(built, field.name).describe():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def queried(exprs: list[str]) -> set[str]:
    return {_SERIES.sub("", name) for expr in exprs for name in _NAME.findall(expr)}


def _dashboard_exprs() -> list[str]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def test_the_documented_metrics_are_the_recorded_ones() -> None:
    """The docstring table of reflection.metrics names exactly what is recorded."""
    assert documented() == recorded()


def test_the_dashboard_queries_only_served_metrics() -> None:
    """Every panel's query uses served names; the dashboard shows runs by outcome,
    failure codes, change codes, tokens, the duration quantiles and lock waits."""
    exprs = _dashboard_exprs()
    assert queried(exprs) <= recorded()
    text = "\n".join(exprs)
    for shown in ("by (outcome)", "by (error_code)", "by (op, code)", "by (direction)"):
        assert shown in text
    for histogram in ("run_duration", "llm_duration", "lock_wait"):
        assert f"histogram_quantile(0.5, sum by (le) (rate(reflection_{histogram}" in text
        assert f"histogram_quantile(0.95, sum by (le) (rate(reflection_{histogram}" in text


def test_the_alerts_query_only_served_metrics() -> None:
    """The alert rules cover failure rate, llm_unavailable, lock waits and queue length."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert queried([r["expr"] for r in rules]) <= recorded()
    names = {r["alert"] for r in rules}
    assert {
        "ReflectionFailureRateHigh",
        "ReflectionLlmUnavailable",
        "ReflectionLockWaitsLong",
        "ReflectionQueueBacklog",
    } <= names
