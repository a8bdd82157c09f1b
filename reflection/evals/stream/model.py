"""The simulated model: a careless but honest LLM, in process and deterministic.

It implements the pipeline's `Llm` protocol. It reads the job id and the memory entries
it is shown from the prompt, and looks the job up in the world (as the scripted server
looks up its rules): it learns each fact the job shows that memory does not hold, with a
verbatim quote of the job's line as evidence; it lists the entries the job relied on in
`confirmed`; it never removes anything in a reflection. It is careless the way real
models are: on about a third of jobs it adds a paraphrase of an entry memory already
holds (under a new name), when a job fetched a page that tells agents what to do it saves
that as a `feedback` entry citing the page, and now and then it misquotes.

For a consolidation pass it merges the entries it knows to be one fact into the oldest of
them and retires the entries unconfirmed for longer than the stale limit, within the
pass's removal bounds.

`Registry` is the ground truth: every entry name the model ever proposed, and the fact it
stands for. Duplicates are counted from it (`reflection.evals.stream.truth`), never from
the near-duplicate detector under test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from reflection.evals.stream.world import Fact, SimJob, World
from reflection.models import LlmDecision, LlmResult, MemoryChange, Usage
from reflection.prompt import estimate_tokens

MODEL_NAME: Final = "stream-sim-1"
MAX_CONFIRMED: Final = 5

_JOB_ID: Final = re.compile(r"^job id: (\S+)$", re.MULTILINE)
_SHOWN_ENTRY: Final = re.compile(r"^<<<MEMORY_ENTRY name=(\S+)", re.MULTILINE)


@dataclass
class Registry:
    """Entry name -> the fact it stands for, per user: the simulation's ground truth."""

    facts: dict[str, dict[str, str]] = field(default_factory=dict)  # user id -> name -> fact

    def record(self, user_id: str, name: str, fact_id: str) -> None:
        self.facts.setdefault(user_id, {})[name] = fact_id

    def fact_of(self, user_id: str, name: str) -> str | None:
        return self.facts.get(user_id, {}).get(name)


@dataclass(frozen=True)
class EntryView:
    """A live entry as a consolidation pass shows it: its name and its record's dates."""

    name: str
    created_at: datetime
    unconfirmed_days: float  # since its last write or confirmation
    protected: bool = False


def fit(model: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the keys `model` does not know (a schema field not on this branch
    yet: `evidence` before the evidence rules, `reason` before consolidation)."""
    return {k: v for k, v in data.items() if k in model.model_fields}


def change_dict(op: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"op": op, "name": name} | {k: v for k, v in fields.items() if v is not None}


class SimModel:
    """The careless model of one stream (one mode): thread-safe, deterministic.

    `jobs` maps the worker's job ids to the world's jobs; `user_of` maps user ids to the
    world's user numbers; `entries` shows a user's live entries to a consolidation pass."""

    def __init__(
        self,
        world: World,
        *,
        jobs: Mapping[str, SimJob],
        stale_days: float,
        max_removals: int,
        entries: Callable[[str, datetime], Sequence[EntryView]] | None = None,
        consolidation_jobs: Mapping[str, str] | None = None,
    ) -> None:
        self.world = world
        self.jobs = jobs
        self.stale_days = stale_days
        self.max_removals = max_removals
        self.entries = entries
        self.consolidation_jobs = consolidation_jobs if consolidation_jobs is not None else {}
        self.registry = Registry()
        self.evidence: dict[tuple[str, str], list[str]] = {}  # (job id, name) -> quotes
        self.prompt_tokens: dict[str, int] = {}  # job id -> prompt tokens (reflections)
        self.now: Callable[[], datetime] | None = None
        self._adds: dict[tuple[str, str], int] = {}  # (user id, fact) -> names tried
        self._lock = threading.Lock()

    # The Llm protocol.

    def decide(
        self, *, system: str, user: str, user_id: str, deadline: float | None = None
    ) -> LlmResult:
        with self._lock:
            m = _JOB_ID.search(user)
            job_id = m.group(1) if m else None
            if job_id is not None and job_id in self.jobs:
                data = self.reflect(self.jobs[job_id], job_id, user_id, _shown_names(user))
                self.prompt_tokens[job_id] = estimate_tokens(system) + estimate_tokens(user)
            else:
                data = self.consolidate(user_id)
            raw = json.dumps(data)
            decision = LlmDecision.model_validate(
                fit(LlmDecision, data)
                | {"memory_changes": [fit(MemoryChange, c) for c in data["memory_changes"]]}
            )
            usage = Usage(
                tokens_in=estimate_tokens(system) + estimate_tokens(user),
                tokens_out=estimate_tokens(raw),
            )
            return LlmResult(decision=decision, raw=raw, model=MODEL_NAME, usage=usage)

    # Reflection.

    def _name(self, user_id: str, fact: Fact, taken: set[str]) -> tuple[str, int]:
        """A fresh name for another entry of `fact`, and how many were tried before."""
        key = (user_id, fact.id)
        i = self._adds.get(key, 0)
        while True:
            base = fact.names[i % len(fact.names)]
            name = base if i < len(fact.names) else f"{base}-{i // len(fact.names) + 1}"
            i += 1
            if name not in taken:
                self._adds[key] = i
                return name, i - 1

    def _add(
        self, job_id: str, user_id: str, fact: Fact, variant: int, taken: set[str], quote: str
    ) -> dict[str, Any]:
        name, _ = self._name(user_id, fact, taken)
        taken.add(name)
        description, body = fact.texts[variant % len(fact.texts)]
        self.registry.record(user_id, name, fact.id)
        self.evidence[(job_id, name)] = [quote]
        return change_dict(
            "add", name, type=fact.type, description=description, body=body, evidence=[quote]
        )

    def _known(self, user_id: str, shown: Sequence[str]) -> dict[str, list[str]]:
        """The facts the shown entries stand for, each with its entries' names."""
        known: dict[str, list[str]] = {}
        for name in shown:
            fid = self.registry.fact_of(user_id, name)
            if fid is not None:
                known.setdefault(fid, []).append(name)
        return known

    def _careless(
        self,
        job: SimJob,
        job_id: str,
        user_id: str,
        known: Mapping[str, list[str]],
        taken: set[str],
    ) -> list[dict[str, Any]]:
        """What a careless model adds besides the new facts: a paraphrase of a fact the
        job relied on, an instruction a fetched page gave."""
        facts, changes = self.world.facts, []
        relied = [fid for fid in job.topics if fid in known]
        if job.careless and relied:
            fid = relied[job.n % len(relied)]
            changes.append(
                self._add(job_id, user_id, facts[fid], 1 + job.n % 2, taken, job.lines[fid])
            )
        if job.planted is not None and job.planted not in known:
            planted = job.planted
            changes.append(self._add(job_id, user_id, facts[planted], 0, taken, job.lines[planted]))
        return changes

    def _misquote(self, job_id: str, change: dict[str, Any]) -> None:
        """Quote, for `change`, something the job does not hold (its own words)."""
        quote = f"as the user said: {change['description']}"
        change["evidence"] = [quote]
        self.evidence[(job_id, change["name"])] = [quote]

    def reflect(
        self, job: SimJob, job_id: str, user_id: str, shown: Sequence[str]
    ) -> dict[str, Any]:
        """The decision on one job, given the entry names the prompt showed."""
        known = self._known(user_id, shown)
        taken = set(shown)
        facts = self.world.facts
        changes: list[dict[str, Any]] = []
        confirmed: list[str] = []
        for fid in job.topics:
            if fid in known:
                confirmed += known[fid]
            else:
                changes.append(self._add(job_id, user_id, facts[fid], 0, taken, job.lines[fid]))
        changes += self._careless(job, job_id, user_id, known, taken)
        if job.misquote and changes:
            self._misquote(job_id, changes[0])
        reasoning = (
            f"Learned {len(changes)} thing(s) from this job; it relied on {len(confirmed)} "
            "entries already in memory."
        )
        return {
            "reasoning": reasoning,
            "memory_changes": changes,
            "piece_edit": None,
            "confirmed": sorted(set(confirmed))[:MAX_CONFIRMED],
        }

    # Consolidation.

    def consolidate(self, user_id: str) -> dict[str, Any]:
        """Merge each fact's entries into its oldest one; retire stale ones; at most
        `max_removals`, and never half the live entries or more."""
        if self.entries is None or self.now is None:
            return {"reasoning": "nothing to consolidate", "memory_changes": []}
        now = self.now()
        live = [e for e in self.entries(user_id, now) if not e.protected]
        total = len(self.entries(user_id, now))
        cap = min(self.max_removals, total // 2)
        changes = merge_changes(user_id, live, self.registry)
        merged = {c["name"] for c in changes}
        keep = merged | {c["merge_target"] for c in changes}
        changes += stale_removals([e for e in live if e.name not in keep], self.stale_days)
        return {
            "reasoning": f"Merged {len(merged)} paraphrase(s) and retired stale entries.",
            "memory_changes": changes[:cap],
            "piece_edit": None,
        }


def merge_changes(
    user_id: str, live: Sequence[EntryView], registry: Registry
) -> list[dict[str, Any]]:
    """For each fact with several live entries, removes merging all but the oldest into
    it (by creation, then name)."""
    by_fact: dict[str, list[EntryView]] = {}
    for e in live:
        fact = registry.fact_of(user_id, e.name)
        if fact is not None:
            by_fact.setdefault(fact, []).append(e)
    changes = []
    for fact in sorted(by_fact):
        group = sorted(by_fact[fact], key=lambda e: (e.created_at, e.name))
        changes += [
            change_dict("remove", e.name, merge_target=group[0].name, reason="paraphrase")
            for e in group[1:]
        ]
    return changes


def stale_removals(live: Sequence[EntryView], stale_days: float) -> list[dict[str, Any]]:
    """Removes of the entries unconfirmed past `stale_days`, the stalest first."""
    return [
        change_dict(
            "remove", e.name, reason=f"stale: unconfirmed for {int(e.unconfirmed_days)} days"
        )
        for e in sorted(live, key=lambda e: (-e.unconfirmed_days, e.name))
        if e.unconfirmed_days > stale_days
    ]


def _shown_names(user_prompt: str) -> list[str]:
    return _SHOWN_ENTRY.findall(user_prompt)


def unconfirmed_days(last: datetime, now: datetime) -> float:
    return (now - last) / timedelta(days=1)
