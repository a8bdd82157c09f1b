"""A script for the scripted LLM server (`reflection.devtools.scripted_llm`) that answers
every scenario with its reference answer (or a counterexample): the evaluation suite's
self-check, and what the CI tests run `reflection eval` against.

    python -m reflection.evals.scripted [--suite DIR] [--counterexample N] > script.json
    python -m reflection.devtools.scripted_llm --port 4010 --script script.json
    reflection eval --endpoint http://127.0.0.1:4010/v1 --model scripted-1   # 100 %
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reflection.evals.scenario import Scenario, load_suite
from reflection.models import LlmDecision
from reflection.shipped import EVAL_SCENARIOS_DIR


def reference(s: Scenario) -> LlmDecision:
    return s.reference


def counterexample(n: int) -> Callable[[Scenario], LlmDecision]:
    """The n-th counterexample where a scenario has one, else its reference answer."""

    def pick(s: Scenario) -> LlmDecision:
        return s.counterexamples[n].answer if n < len(s.counterexamples) else s.reference

    return pick


def script_for(
    scenarios: Sequence[Scenario], answer: Callable[[Scenario], LlmDecision] = reference
) -> dict[str, Any]:
    """One rule per scenario, matched on its user prompt (`Scenario.script_match`)."""
    return {
        "rules": [
            {
                "match": s.script_match,
                "replies": [{"content": answer(s).model_dump(mode="json")}],
            }
            for s in scenarios
        ]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=EVAL_SCENARIOS_DIR)
    parser.add_argument("--counterexample", type=int, metavar="N", default=None)
    args = parser.parse_args(argv)
    pick = reference if args.counterexample is None else counterexample(args.counterexample)
    json.dump(script_for(load_suite(args.suite), pick), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
