"""`reflection eval` end to end: the real prompt builder, the openai SDK over HTTP to the
scripted server, the applier's dry-run planner and the scorer. Perfect answers must score
100 %, each counterexample must fail exactly the checks it names, and the failure paths
(refused key, unreachable endpoint, broken model output, bad suite) must say so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from reflection.cli.app import app
from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.evals.scenario import load_suite
from reflection.evals.scripted import counterexample, script_for
from reflection.settings import get_settings
from reflection.shipped import BUILTIN_PIECES_DIR, EVAL_SCENARIOS_DIR

SUITE = EVAL_SCENARIOS_DIR
SCENARIOS = load_suite(SUITE)
KEY = "sk-eval-test-key-0123456789"


@pytest.fixture
def server() -> Iterator[ScriptedLlmServer]:
    with ScriptedLlmServer(script_for(SCENARIOS), require_key=KEY) as srv:
        yield srv


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: ScriptedLlmServer
) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)  # no stray .env; reports land in tmp_path
    for name, value in {
        "LLM_API_KEY": KEY,
        "LLM_ENDPOINT": server.base_url,
        "LLM_MODEL": "scripted-1",
        "PIECES_DIR": str(BUILTIN_PIECES_DIR),
        "LLM_BACKOFF_BASE_SECONDS": "0.01",
        "LLM_BACKOFF_MAX_SECONDS": "0.02",
        "LLM_TIMEOUT_SECONDS": "5",
    }.items():
        monkeypatch.setenv(f"REFLECTION_{name}", value)

    def invoke(*args: str) -> Result:
        get_settings.cache_clear()
        return CliRunner().invoke(app, ["eval", "--suite", str(SUITE), *args])

    yield invoke


def _report(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _failed_kinds(run: dict[str, Any]) -> set[str]:
    return {f["check"].split("[")[0] for f in run["failed_checks"]}


def test_reference_answers_score_100_percent(run: Any, server: ScriptedLlmServer) -> None:
    report = _report(run("--json", "--out", "a.json"))
    assert report["summary"]["runs"] == len(SCENARIOS) >= 30
    assert report["summary"]["pass_rate"] == 1.0
    assert {c["pass_rate"] for c in report["categories"].values()} == {1.0}
    assert all(s["tokens_in"] > 0 and s["tokens_out"] > 0 for s in report["scenarios"])
    assert json.loads(Path("a.json").read_text()) == report
    # The real path: one structured-output request per scenario, with the schema.
    chats = [r for r in server.requests if r["path"].endswith("/chat/completions")]
    assert len(chats) == len(SCENARIOS)
    assert all(r["json"]["response_format"]["type"] == "json_schema" for r in chats)


def test_counterexamples_fail_exactly_their_checks(run: Any, server: ScriptedLlmServer) -> None:
    server.set_script(script_for(SCENARIOS, counterexample(0)))
    report = _report(run("--json", "--out", "b.json"))
    by_id = {s["id"]: s for s in report["scenarios"]}
    for scenario in SCENARIOS:
        (r,) = by_id[scenario.id]["runs"]
        expected = set(scenario.counterexamples[0].fails) if scenario.counterexamples else set()
        assert _failed_kinds(r) == expected, scenario.id
        assert r["passed"] == (not expected)
        assert r["decision"] is not None
    # The report keeps the answers to read, but never a credential from them.
    text = Path("b.json").read_text()
    assert not [x for s in SCENARIOS for x in s.expect.secrets if x in text]


def test_compare_names_regressions(run: Any, server: ScriptedLlmServer) -> None:
    assert run("--out", "good.json").exit_code == 0
    server.set_script(script_for(SCENARIOS, counterexample(0)))
    bad = run("--out", "bad.json")
    assert bad.exit_code == 0, bad.output
    assert "failed decisions" in bad.stdout
    diff = _report(run("--compare", "good.json", "bad.json", "--json"))
    assert sorted(diff["regressed"]) == sorted(s.id for s in SCENARIOS if s.counterexamples)
    assert diff["improved"] == [] and diff["overall"][0] == 1.0 > diff["overall"][1]
    table = run("--compare", "good.json", "bad.json")
    assert table.exit_code == 0 and "regressed" in table.stdout


def test_fail_under_exits_1(run: Any, server: ScriptedLlmServer) -> None:
    server.set_script(script_for(SCENARIOS, counterexample(0)))
    result = run("--fail-under", "0.99", "--out", "x.json")
    assert result.exit_code == 1
    assert "below 99%" in result.output


def test_only_and_repeat(run: Any, server: ScriptedLlmServer) -> None:
    report = _report(run("--only", "injection", "--repeat", "3", "--json", "--out", "r.json"))
    injection = [s for s in SCENARIOS if s.category == "injection"]
    assert report["summary"]["runs"] == 3 * len(injection) > 0
    assert all(len(s["runs"]) == 3 for s in report["scenarios"])


def test_broken_model_output_fails_the_answer_check(run: Any, server: ScriptedLlmServer) -> None:
    target = SCENARIOS[0]
    script = script_for(SCENARIOS)
    script["rules"][0] = {
        "match": f"job id: {target.job_id}\n",
        "replies": [{"content": "I think so."}],
    }
    server.set_script(script)
    report = _report(run("--json", "--out", "x.json"))
    by_id = {s["id"]: s for s in report["scenarios"]}
    (r,) = by_id[target.id]["runs"]
    assert r["outcome"] == "llm_invalid_output"
    assert [f["check"] for f in r["failed_checks"]] == ["answer"]
    assert report["summary"]["passed"] == len(SCENARIOS) - 1


def test_refused_key_exits_3_without_the_key(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLECTION_LLM_API_KEY", "sk-wrong-key-9876543210")
    result = run("--out", "x.json")
    assert result.exit_code == 3
    assert "refused the key" in result.output
    assert "sk-wrong-key-9876543210" not in result.output


def test_unreachable_endpoint_exits_3(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLECTION_LLM_MAX_ATTEMPTS", "1")
    result = run("--endpoint", "http://127.0.0.1:9/v1", "--only", "learn-*", "--out", "x.json")
    assert result.exit_code == 3
    assert "answered no run" in result.output


def test_bad_suite_is_a_usage_error(run: Any, tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(SUITE / f"{SCENARIOS[0].id}.yaml", suite)
    text = (suite / f"{SCENARIOS[0].id}.yaml").read_text()
    (suite / f"{SCENARIOS[0].id}.yaml").write_text(text.replace("summary:", "sumary:", 1))
    result = CliRunner().invoke(app, ["eval", "--suite", str(suite), "--out", "x.json"])
    assert result.exit_code == 2
    assert SCENARIOS[0].id in result.output and "sumary" in result.output
    nothing = run("--only", "no-such-scenario-*")
    assert nothing.exit_code == 2 and "no scenario matches" in nothing.output


def test_compare_refuses_a_file_that_is_not_a_report(run: Any, tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    result = run("--compare", "x.json", "x.json")
    assert result.exit_code == 2 and "not a reflection-eval/1 report" in result.output
    (tmp_path / "y.json").write_text('{"format": "reflection-eval/1", "categories": {}}')
    broken = run("--compare", "y.json", "y.json")
    assert broken.exit_code == 2 and "malformed" in broken.output


def test_no_password_from_the_endpoint_url_is_printed_or_kept(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFLECTION_LLM_MAX_ATTEMPTS", "1")
    url = "http://gw:hunter2pass@127.0.0.1:9/v1"
    result = run("--endpoint", url, "--only", "learn-user-role", "--out", "r.json")
    assert result.exit_code == 3
    assert "hunter2pass" not in result.output
    assert "hunter2pass" not in Path("r.json").read_text()


def test_an_unwritable_report_path_fails_before_any_run(
    run: Any, server: ScriptedLlmServer
) -> None:
    """The report's place is checked before the (costly) runs, not after them."""
    Path("file").write_text("x")
    blocked = run("--out", "file/report.json")  # a file where the folder should be
    assert blocked.exit_code == 2 and "choose a place with --out" in blocked.output
    assert server.requests == []
