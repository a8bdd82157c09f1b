"""`reflection eval --stream` from the command line: a short stream with the rules on,
its JSON report and plot; `--jobs` keeps its meaning (and bound) without --stream."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from reflection.cli.app import app
from reflection.settings import get_settings
from tests.conftest import TEST_REDIS_URL


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_client: redis.Redis) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFLECTION_REDIS_URL", TEST_REDIS_URL)
    get_settings.cache_clear()
    return tmp_path


def test_a_short_stream_prints_its_report_and_writes_the_plot(env: Path) -> None:
    plot, out = env / "img" / "stream.svg", env / "stream.json"
    args = ["eval", "--stream", "--jobs", "12", "--users", "2", "--days", "40", "--rules", "on"]
    result = CliRunner().invoke(app, [*args, "--plot", str(plot), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["runs"]) == ["on"]
    assert data["config"] == {
        "jobs": 12,
        "users": 2,
        "days": 40,
        "seed": 1,
        "sample_every": 5,
        "checkpoint": 4,
    }
    assert {u["user"] for u in data["runs"]["on"]["users"]} == {0, 1}
    assert "targets" not in data  # the targets compare the rules on with the rules off
    assert json.loads(out.read_text()) == data
    assert ET.parse(plot).getroot().tag.endswith("svg")


def test_jobs_beyond_64_is_a_usage_error_without_stream(env: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--jobs", "65"])
    assert result.exit_code == 2
    assert "at most 64" in result.output
