"""A memory too large for the context never fails the run (issue 22, item 8): with 3,000
memory files every run used to end `context_overflow`. The prompt shows the memory
index (cut to the names that fit) and the bodies that fit, and the run goes on."""

from __future__ import annotations

from typing import Any

import pytest

from reflection.models import Outcome
from tests.integration.conftest import Env, decision, env

__all__ = ["env"]

pytestmark = pytest.mark.integration

ENTRIES = 3000


def _plant(env: Env) -> None:
    folder = env.user().memory_dir
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(ENTRIES):
        name = f"fact-{i:04d}-about-the-deploy-pipeline"
        (folder / f"{name}.md").write_text(
            f"---\nname: {name}\ndescription: what deploy step {i} needs before it runs\n"
            f"type: project\n---\nStep {i} of the deploy needs the staging lane green. "
            * 1
            + "More detail about the step. " * 20
        )


def _user_prompt(env: Env) -> str:
    [request] = [r for r in env.llm.requests if r["path"].endswith("/chat/completions")]
    content: str = request["json"]["messages"][1]["content"]
    return content


def test_three_thousand_memory_files_do_not_overflow_the_context(env: Env, make_job: Any) -> None:
    """The run reaches the LLM and applies its decision; the prompt carries the index's
    first names, the count of the rest, and the job."""
    _plant(env)
    make_job("job-big", task="Speed up deploy step 2999 of the pipeline")
    removal = {
        "op": "remove",
        "name": "fact-0001-about-the-deploy-pipeline",
    }
    env.script("job-big", {"content": decision("one step is gone", [removal])})
    report = env.run("job-big")
    assert report.outcome is Outcome.APPLIED, (report.error_code, report.detail)
    prompt = _user_prompt(env)
    assert "<<<MEMORY_INDEX entries=3000" in prompt
    assert "- fact-0000-about-the-deploy-pipeline (project" in prompt
    assert "more entries not listed, to fit the context" in prompt
    assert "Speed up deploy step 2999" in prompt
    # The body most related to the job is shown after it.
    assert prompt.index("<<<REQUEST") < prompt.index("name=fact-2999-about-the-deploy-pipeline")
    assert not env.user().memory_file("fact-0001-about-the-deploy-pipeline").exists()
    [row] = env.metrics()
    assert row["outcome"] == "applied" and row["error_code"] is None
