"""What the stream measures: issue 21's judging rules and the consolidation pass, each on
or off for one run.

- Evidence rules (`unsupported`, `untrusted_source`, `near_duplicate`): the worker's own
  judge, with `Limits.evidence_rules` set from `Deps.evidence_rules`.
- Consolidation: the worker's own pass (`reflection.consolidate.run_consolidation`), run
  in process on the simulated clock by the threshold trigger and the daily sweep.

The rules-off run is the baseline: the worker as it judged before issue 21.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reflection.settings import Settings


def setting(s: Settings, name: str, default: Any) -> Any:
    """A setting of issue 21 (stale days, consolidation bounds), or its SPEC default."""
    return getattr(s, name, default)


@dataclass(frozen=True)
class Rules:
    """One run's rules: whether changes are judged on their evidence, and whether memory
    is consolidated."""

    evidence: bool
    consolidation: bool

    @property
    def label(self) -> str:
        parts = [
            f"evidence rules {'on' if self.evidence else 'off'}",
            f"consolidation {'on' if self.consolidation else 'off'}",
        ]
        return ", ".join(parts)


def rules_for(on: bool) -> Rules:
    """The rules of the `on` run (everything), or of the baseline (nothing)."""
    return Rules(evidence=on, consolidation=on)
