"""A decision cannot hold its user's lock (issue 22, item 5).

Before: 17,500 removes took 47 s of CPU in judging (quadratic), the lock expired, and
the 2.5 MB decision was replayed on 12 retries without ever becoming poison. Now the
schema caps `memory_changes` at 64 and `reasoning` at 16 KiB (`llm_invalid_output`),
judging is linear, and a decision whose run keeps losing its lock ends `poison`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from reflection.changes import Grounds, Limits, _each_change, _Rules, judge_memory_changes
from reflection.constants import USER_LOCK_PREFIX
from reflection.errors import LockLostError
from reflection.models import (
    MAX_MEMORY_CHANGES,
    MAX_REASONING_CHARS,
    Code,
    MemoryChange,
    MemoryEntry,
    Outcome,
)
from reflection.plan import plan
from reflection.reply import DecisionParseError, parse_decision
from reflection.storage import reflection_claims
from tests.hostile.conftest import Hostile, add, decision, expect

# The old batch rules, verbatim but for names: the reference the linear ones must match.

Codes = list[tuple[Code, str]]


def _old_final_names(
    changes: Sequence[MemoryChange], codes: Codes, current: Mapping[str, MemoryEntry]
) -> set[str]:
    names = set(current)
    for ch, (code, _) in zip(changes, codes, strict=True):
        if code is Code.OK:
            (names.discard if ch.op == "remove" else names.add)(ch.name)
    return names


def _old_merge_targets(
    changes: Sequence[MemoryChange], codes: Codes, current: Mapping[str, MemoryEntry]
) -> None:
    def removes() -> list[int]:
        return [
            i
            for i, ch in enumerate(changes)
            if ch.op == "remove" and codes[i][0] is Code.OK and ch.merge_target is not None
        ]

    def reject(i: int) -> None:
        target = changes[i].merge_target
        codes[i] = (Code.MERGE_TARGET_MISSING, f"{target!r} will not exist afterwards")

    possible = set(current) | {
        ch.name for ch, (code, _) in zip(changes, codes, strict=True) if code is Code.OK
    }
    for i in removes():
        if changes[i].merge_target not in possible or changes[i].merge_target == changes[i].name:
            reject(i)
    while True:
        names = _old_final_names(changes, codes, current)
        bad = [i for i in removes() if changes[i].merge_target not in names]
        if not bad:
            return
        reject(bad[-1])


def _old_overflow(
    changes: Sequence[MemoryChange], codes: Codes, current: Mapping[str, MemoryEntry], cap: int
) -> None:
    for i in reversed(range(len(changes))):
        if len(_old_final_names(changes, codes, current)) <= cap:
            return
        if changes[i].op == "add" and codes[i][0] is Code.OK:
            codes[i] = (Code.MEMORY_FULL, f"at most {cap} entries")


def old_batch_rules(
    changes: Sequence[MemoryChange], codes: Codes, current: Mapping[str, MemoryEntry], cap: int
) -> None:
    while True:
        before = list(codes)
        _old_merge_targets(changes, codes, current)
        _old_overflow(changes, codes, current, cap)
        if codes == before:
            return


def entry(name: str) -> MemoryEntry:
    return MemoryEntry(name=name, description="d", type="project", body="b")


def rm(name: str, into: str | None = None) -> MemoryChange:
    return MemoryChange(op="remove", name=name, merge_target=into)


def new(name: str) -> MemoryChange:
    return MemoryChange(op="add", name=name, description="d", type="project", body="b")


def judged(
    changes: Sequence[MemoryChange], current: Sequence[str], cap: int, max_changes: int = 10_000
) -> list[tuple[str, str]]:
    limits = Limits(max_changes=max_changes, max_entries=cap)
    got = judge_memory_changes(changes, {n: entry(n) for n in current}, limits)
    return [(v.code.value, v.detail) for v in got.verdicts]


def reference(
    changes: Sequence[MemoryChange], current: Sequence[str], cap: int, max_changes: int = 10_000
) -> list[tuple[str, str]]:
    """The verdicts under the old rules (the single-change rules are unchanged)."""
    limits = Limits(max_changes=max_changes, max_entries=cap)
    now = {n: entry(n) for n in current}
    codes = _each_change(changes, now, frozenset(), limits, _Rules(limits, Grounds(), now))
    old_batch_rules(changes, codes, now, cap)
    return [(code.value, detail) for code, detail in codes]


# (changes, current entries, max entries): merge chains and overflows that interact.
TRICKY: list[tuple[str, list[MemoryChange], list[str], int]] = [
    ("chain-into-removed", [rm("a", "b"), rm("b", "c"), rm("c", "d")], ["a", "b", "c"], 10),
    ("cycle", [rm("a", "b"), rm("b", "a")], ["a", "b"], 10),
    ("self-merge", [rm("a", "a")], ["a"], 10),
    ("into-unknown", [rm("a", "zz"), rm("b", "a")], ["a", "b"], 10),
    ("rescue-by-later-reject", [rm("b", "a"), rm("a", "q")], ["a", "b"], 10),
    ("into-new-add", [new("n"), rm("a", "n")], ["a"], 10),
    ("into-add-that-overflows", [rm("a", "n"), new("m"), new("n")], ["a", "x"], 2),
    ("overflow-cascade", [new("n1"), new("n2"), rm("a", "n2"), rm("b", "n1")], ["a", "b"], 2),
    ("overflow-then-rescue", [rm("c", "a"), new("n"), rm("a", "n")], ["a", "c"], 1),
    ("dup-name", [rm("a", "b"), rm("a"), rm("b", "a")], ["a", "b"], 10),
    ("add-existing-target", [new("a"), rm("b", "a")], ["a", "b"], 10),
    (
        "long-chain-into-add",
        [new("z"), *[rm(f"e{i}", f"e{i + 1}") for i in range(6)], rm("e6", "z")],
        [f"e{i}" for i in range(7)],
        7,
    ),
    (
        "chain-of-40-into-nothing",
        [*[rm(f"e{i}", f"e{i + 1}") for i in range(39)], rm("e39", "zz")],
        [f"e{i}" for i in range(40)],
        40,
    ),
    ("full-no-room", [new("p"), new("q"), rm("a", "p")], ["a", "b", "c"], 3),
    ("remove-makes-room", [rm("a"), new("p"), new("q")], ["a", "b"], 3),
]


@pytest.mark.parametrize(
    ("changes", "current", "cap"), [c[1:] for c in TRICKY], ids=[c[0] for c in TRICKY]
)
def test_linear_batch_rules_give_the_old_verdicts(
    changes: list[MemoryChange], current: list[str], cap: int
) -> None:
    assert judged(changes, current, cap) == reference(changes, current, cap)


NAMES = [f"n{i}" for i in range(8)]


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[MemoryChange], list[str], int]:
    current = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    change = st.one_of(
        st.builds(new, st.sampled_from(NAMES)),
        st.builds(rm, st.sampled_from(NAMES), st.one_of(st.none(), st.sampled_from(NAMES))),
    )
    return draw(st.lists(change, max_size=12)), current, draw(st.integers(0, 8))


@settings(max_examples=600, deadline=None, database=None)
@given(batches())
def test_linear_batch_rules_match_the_old_ones_on_any_batch(
    batch: tuple[list[MemoryChange], list[str], int],
) -> None:
    changes, current, cap = batch
    assert judged(changes, current, cap) == reference(changes, current, cap)


class CountingList(list[MemoryChange]):
    """A list that counts how many of its items were read, by index or by iteration."""

    reads = 0

    def __getitem__(self, i: Any) -> Any:
        CountingList.reads += 1
        return super().__getitem__(i)

    def __iter__(self) -> Iterator[MemoryChange]:
        for item in super().__iter__():
            CountingList.reads += 1
            yield item


def thousands(shape: str, n: int) -> tuple[list[MemoryChange], list[str], int]:
    """`n` changes built to make the old rules go round once per rejection."""
    current = [f"e{i}" for i in range(n)]
    if shape == "merge-chain":  # each remove merges into the next, the last into nothing
        changes = [rm(f"e{i}", f"e{i + 1}") for i in range(n - 1)] + [rm(f"e{n - 1}", "zz")]
        return changes, current, n
    half = n // 2  # removes merge into adds that do not fit
    changes = [new(f"a{i}") for i in range(half)] + [rm(f"e{i}", f"a{i}") for i in range(half)]
    return changes, current, half


@pytest.mark.parametrize("shape", ["merge-chain", "overflow-cascade"])
def test_judging_thousands_of_changes_reads_each_a_bounded_number_of_times(shape: str) -> None:
    """The pure judge (no schema cap) on 3,000 changes: every change is read a bounded
    number of times, not once per rejection (the old rules read 600 such changes about
    500,000 times, 3,000 about 12 million)."""
    n = 3000
    changes, current, cap = thousands(shape, n)
    counted = CountingList(changes)
    CountingList.reads = 0
    verdicts = judged(counted, current, cap=cap)
    assert CountingList.reads <= 12 * n, CountingList.reads
    assert len(verdicts) == n


@pytest.mark.parametrize("shape", ["merge-chain", "overflow-cascade"])
def test_the_linear_rules_match_the_old_ones_on_hundreds_of_changes(shape: str) -> None:
    changes, current, cap = thousands(shape, 300)
    assert judged(changes, current, cap) == reference(changes, current, cap)


def test_the_schema_caps_changes_and_reasoning() -> None:
    """64 changes and 16 KiB of reasoning validate; one more of either does not."""
    changes = [add(f"fact-{i}") for i in range(MAX_MEMORY_CHANGES)]
    assert len(parse_decision(_json(decision("r", changes))).memory_changes) == 64
    assert parse_decision(_json(decision("r" * MAX_REASONING_CHARS)))
    with pytest.raises(DecisionParseError, match="memory_changes"):
        parse_decision(_json(decision("r", [*changes, add("one-more")])))
    with pytest.raises(DecisionParseError, match="reasoning"):
        parse_decision(_json(decision("r" * (MAX_REASONING_CHARS + 1))))


def test_changes_past_max_changes_per_run_are_still_judged_too_many_changes() -> None:
    """The schema's cap is a bound against abuse, not the setting: up to 64 changes
    validate, and those past REFLECTION_MAX_CHANGES_PER_RUN get `too_many_changes`."""
    changes = [new(f"f{i}") for i in range(MAX_MEMORY_CHANGES)]
    codes = [code for code, _ in judged(changes, [], cap=200, max_changes=8)]
    assert codes == ["ok"] * 8 + ["too_many_changes"] * 56


def _json(obj: object) -> str:
    return json.dumps(obj)


@pytest.mark.integration
@pytest.mark.parametrize(
    "reply",
    [
        decision("r", [add(f"fact-{i}") for i in range(MAX_MEMORY_CHANGES + 1)]),
        decision("r" * (MAX_REASONING_CHARS + 1), [add("fact")]),
        decision("r", [{"op": "remove", "name": f"e{i}"} for i in range(17_500)]),
    ],
    ids=["65-changes", "long-reasoning", "17500-removes"],
)
def test_an_answer_over_the_caps_fails_llm_invalid_output_at_once(
    hostile: Hostile, reply: dict[str, Any]
) -> None:
    """The decision never reaches judging or the lock: the run fails, once, with a code
    and a metrics row (the repair round-trip is answered the same), nothing written."""
    report = hostile.run("job-big", reply)
    expect(report, "llm_invalid_output")
    assert hostile.env.llm_calls() == 2  # the answer and its one repair


@pytest.mark.integration
def test_a_stored_decision_over_the_caps_fails_instead_of_crashing(hostile: Hostile) -> None:
    """A decision stored on the claim before the caps (a retry reuses it) fails the run
    `llm_invalid_output`; it is not treated as a bug and replayed."""
    h = hostile
    h.run("job-old", decision("r", [add("kept")]))
    big = [add(f"fact-{i}") for i in range(MAX_MEMORY_CHANGES + 1)]
    stored = {
        "decision": decision("r", big),
        "raw": "{}",
        "model": "m",
        "usage": {"tokens_in": 1, "tokens_out": 1},
    }
    h.job("job-stored", user_id="alice", piece_name="default")
    with h.env.engine.begin() as conn:
        conn.execute(
            reflection_claims.insert().values(
                original_job_id="job-stored",
                reflection_job_id="run-1",
                user_id="alice",
                state="running",
                fence=1,
                deliveries=1,
                lease_expires_at=_past(),
                decision=_json(stored),
            )
        )
    report = h.run("job-stored", make_job=False, reflection_job_id="run-1")
    expect(report, "llm_invalid_output")
    assert h.env.llm_calls() == 1  # only job-old asked; the stored decision was not re-asked


def _past() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)


@pytest.mark.integration
def test_a_decision_that_keeps_losing_its_lock_ends_poison(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose lock expires while it plans (a decision too slow to apply) is retried,
    but each such delivery counts toward poison: after REFLECTION_MAX_DELIVERIES it fails
    `poison` instead of being replayed forever. The LLM was asked once."""
    h = hostile
    h.env.settings(max_deliveries=2)
    real_plan = plan
    import reflection.lock as lock_mod

    slept = [0.0]  # how long planning took, as the lock's clock sees it

    def slow_plan(**kw: Any) -> Any:
        slept[0] += h.env.deps.settings.lock_expire_seconds + 1.0
        h.env.deps.redis.delete("lock:" + USER_LOCK_PREFIX + "alice")  # expired meanwhile
        return real_plan(**kw)

    clock = SimpleNamespace(monotonic=lambda: time.monotonic() + slept[0])
    monkeypatch.setattr(lock_mod, "time", clock)
    monkeypatch.setattr("reflection.pipeline.plan", slow_plan)
    h.job("job-slow", user_id="alice", piece_name="default")
    h.env.script("job-slow", {"content": decision("r", [add("fact")])})
    for _ in range(2):  # the first delivery and its retry (the same task id)
        with pytest.raises(LockLostError):
            h.env.run("job-slow", reflection_job_id="task-1")
    report = h.env.run("job-slow", reflection_job_id="task-1")
    assert (report.outcome, report.error_code) == (Outcome.FAILED, "poison")
    assert h.env.llm_calls() == 1
    with h.env.engine.connect() as conn:
        state = conn.execute(select(reflection_claims.c.state)).scalar_one()
    assert state == "failed"
    assert not h.user().memory_dir.exists() or not any(h.user().memory_dir.iterdir())
