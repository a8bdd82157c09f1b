"""The stream simulation's pure parts: the world, the careless model, its ground truth,
the metrics and the report's targets (issue 21 item 5; the run itself is in
tests/integration/test_stream.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from reflection.evals.stream import report, truth
from reflection.evals.stream.model import EntryView, Registry, SimModel, merge_changes
from reflection.evals.stream.runner import ModeResult, Sample, checkpoint, sample_points
from reflection.evals.stream.world import PARAPHRASE_RATE, START, SimJob, World, build_world
from reflection.evidence import ShownJob, match_quote

WORLD = build_world(seed=7, jobs=300, users=5, days=180)


def _shown(job: SimJob) -> ShownJob:
    return ShownJob.from_prompt(request=job.task, result=job.result, log_text=job.log)


# The world.


def test_the_world_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    again = build_world(seed=7, jobs=300, users=5, days=180)
    other = build_world(seed=8, jobs=300, users=5, days=180)
    assert again == WORLD
    assert [j.log for j in other.jobs] != [j.log for j in WORLD.jobs]


def test_jobs_are_in_time_order_within_the_days_and_every_user_has_jobs() -> None:
    times = [j.at for j in WORLD.jobs]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] <= START + timedelta(days=180)
    assert set(Counter(j.user for j in WORLD.jobs)) == set(range(5))


def test_about_a_third_of_jobs_are_careless() -> None:
    share = sum(j.careless for j in WORLD.jobs) / len(WORLD.jobs)
    assert abs(share - PARAPHRASE_RATE) < 0.08


def test_each_fact_a_job_shows_is_quotable_and_trusted_exactly_when_the_user_said_it() -> None:
    """The ground truth agrees with the trust rule the worker applies: an instruction the
    user gave is on a trusted line, a project fact or a page's instruction is not."""
    seen = Counter[str]()
    for job in WORLD.jobs[:80]:
        for fid, line in job.lines.items():
            fact = WORLD.facts[fid]
            m = match_quote(line, _shown(job))
            assert m.found, (fid, line)
            kind = "planted" if fact.planted else fact.type
            assert m.trusted == (fact.instruction and not fact.planted), (kind, line)
            seen[kind] += 1
    assert seen["planted"] and seen["feedback"] and seen["project"]


def test_project_facts_are_shown_only_during_their_phase() -> None:
    phases: dict[tuple[int, int], list[float]] = {}
    for job in WORLD.jobs:
        for fid in job.topics:
            phase = WORLD.facts[fid].phase
            if phase is not None:
                phases.setdefault((job.user, phase), []).append(job.day)
    for days in phases.values():
        assert max(days) - min(days) < 56  # a phase lasts at most eight weeks


# The model.


def _model(world: World = WORLD) -> SimModel:
    jobs = {f"j{j.n}": j for j in world.jobs}
    return SimModel(world, jobs=jobs, stale_days=90, max_removals=10)


def _job(**kw: Any) -> SimJob:
    base = next(j for j in WORLD.jobs if j.planted is None and len(j.topics) == 3)
    return SimJob(**{**base.__dict__, "careless": False, "misquote": False} | kw)


def test_a_new_fact_is_added_once_with_a_quote_from_the_job() -> None:
    model, job = _model(), _job()
    decision = model.reflect(job, "j1", "alice", shown=[])
    adds = decision["memory_changes"]
    assert [model.registry.fact_of("alice", c["name"]) for c in adds] == list(job.topics)
    for change in adds:
        assert {change["op"]} <= {"add"}
        (quote,) = change["evidence"]
        assert match_quote(quote, _shown(job)).found
    assert decision["confirmed"] == []


def test_a_known_fact_is_confirmed_not_added_again_unless_careless() -> None:
    model, job = _model(), _job()
    names = [c["name"] for c in model.reflect(job, "j1", "alice", shown=[])["memory_changes"]]
    careful = model.reflect(job, "j2", "alice", shown=names)
    assert careful["memory_changes"] == []
    assert careful["confirmed"] == sorted(names)
    careless = model.reflect(_job(careless=True), "j3", "alice", shown=names)
    (paraphrase,) = careless["memory_changes"]
    assert paraphrase["op"] == "add" and paraphrase["name"] not in names
    fact = model.registry.fact_of("alice", paraphrase["name"])
    assert fact in job.topics  # the ground truth knows what it paraphrases
    canonical = WORLD.facts[fact].texts[0]
    assert (paraphrase["description"], paraphrase["body"]) != canonical  # reworded


def test_a_planted_instruction_is_saved_as_feedback_citing_the_page() -> None:
    model = _model()
    job = next(j for j in WORLD.jobs if j.planted is not None)
    assert job.planted is not None
    fid = job.planted
    changes = model.reflect(job, "j1", f"u{job.user}", shown=[])["memory_changes"]
    (change,) = [c for c in changes if model.registry.fact_of(f"u{job.user}", c["name"]) == fid]
    assert change["type"] == "feedback"
    assert change["evidence"] == [job.lines[fid]]
    assert not match_quote(change["evidence"][0], _shown(job)).trusted


def test_a_misquote_cites_something_the_job_does_not_hold() -> None:
    model, job = _model(), _job(misquote=True)
    first = model.reflect(job, "j1", "alice", shown=[])["memory_changes"][0]
    assert not match_quote(first["evidence"][0], _shown(job)).found


def test_a_reflection_never_removes() -> None:
    model = _model()
    shown: dict[int, list[str]] = {}
    for job in WORLD.jobs[:120]:
        decision = model.reflect(job, f"j{job.n}", f"u{job.user}", shown.get(job.user, []))
        ops = {c["op"] for c in decision["memory_changes"]}
        assert ops <= {"add"}
        shown.setdefault(job.user, []).extend(c["name"] for c in decision["memory_changes"])


def _view(name: str, day: int, unconfirmed: float) -> EntryView:
    return EntryView(name, START + timedelta(days=day), unconfirmed)


def test_consolidation_merges_a_facts_entries_into_its_oldest() -> None:
    reg = Registry()
    for name, fact in [("a", "f1"), ("a2", "f1"), ("a3", "f1"), ("b", "f2"), ("c", "f3")]:
        reg.record("u", name, fact)
    live = [_view("a2", 3, 0), _view("a", 1, 0), _view("a3", 5, 0), _view("b", 1, 0)]
    changes = merge_changes("u", live, reg)
    assert [(c["name"], c["merge_target"]) for c in changes] == [("a2", "a"), ("a3", "a")]


@pytest.mark.parametrize(
    ("unconfirmed", "retired"),
    [
        ([10, 20, 91, 120, 30, 40], ["e3", "e2"]),  # only past 90 days, the stalest first
        ([90, 89, 10, 10], []),  # 90 days is not past the limit
        ([100 + i for i in range(30)], [f"e{i}" for i in range(20, 30)]),  # at most 10
        ([100, 100, 100, 5], ["e0", "e1"]),  # never half the live entries or more
    ],
)
def test_consolidation_retires_stale_entries_within_its_bounds(
    unconfirmed: list[float], retired: list[str]
) -> None:
    model = _model()
    entries = [_view(f"e{i}", 0, u) for i, u in enumerate(unconfirmed)]
    model.entries = lambda user_id, now: entries
    model.now = lambda: START
    changes = model.consolidate("u")["memory_changes"]
    assert sorted(c["name"] for c in changes) == sorted(retired)
    assert all(c["op"] == "remove" and c["reason"].startswith("stale") for c in changes)


# Ground truth and metrics.


@pytest.mark.parametrize(
    ("facts", "pairs"),
    [
        ([], 0),
        (["f1", "f2", "f3"], 0),
        (["f1", "f1"], 1),
        (["f1", "f1", "f1", "f2", "f2"], 4),  # 3 + 1
        (["f1", None, None], 0),  # names the model never wrote are nobody's duplicate
    ],
)
def test_duplicate_pairs_come_from_the_ground_truth(facts: list[str | None], pairs: int) -> None:
    names = [f"n{i}" for i in range(len(facts))]
    assert truth.duplicate_pairs(names, dict(zip(names, facts, strict=True)).get) == pairs


def test_untrusted_instructions_count_live_entries_of_planted_facts() -> None:
    planted = next(f for f in WORLD.facts.values() if f.planted)
    user_fact = next(f for f in WORLD.facts.values() if f.instruction and not f.planted)
    project = next(f for f in WORLD.facts.values() if f.type == "project")
    owner = {"p": planted.id, "p2": planted.id, "u": user_fact.id, "x": project.id}
    assert truth.untrusted_instructions(["p", "p2", "u", "x", "?"], owner.get, WORLD.facts) == 2


def test_stale_is_past_the_limit_only() -> None:
    now = START + timedelta(days=200)
    entries = [truth.Freshness(str(d), now - timedelta(days=d)) for d in (0, 89, 90, 91, 150)]
    assert truth.stale(entries, now, 90) == 2


def test_sample_points_hold_the_checkpoint_and_the_end() -> None:
    assert checkpoint(300) == 100
    points = sample_points(300, 7)
    assert {100, 300, 7, 294} <= points and 5 not in points
    assert sample_points(1, 5) == {1}


# The report.


def _result(mode: str, rows: dict[int, tuple[int, int, int, int, int]]) -> ModeResult:
    """rows: user -> (live at the checkpoint, live at the end, pairs, stale, untrusted)."""
    r = ModeResult(mode, mode)  # type: ignore[arg-type]
    for u, (early, live, pairs, stale, untrusted) in rows.items():
        r.samples.append(Sample(100, 60.0, u, early, 0, 0, 0))
        r.samples.append(Sample(300, 180.0, u, live, pairs, stale, untrusted))
        r.tokens += [(250 + u, u, 1000 * (u + 1)), (290 + u, u, 3000)]
    return r


OFF = {0: (20, 45, 30, 10, 3), 1: (25, 50, 40, 12, 2)}


@pytest.mark.parametrize(
    ("on", "missed"),
    [
        ({0: (16, 20, 0, 1, 0), 1: (18, 22, 1, 2, 0)}, []),
        ({0: (16, 25, 0, 1, 0), 1: (18, 22, 1, 2, 0)}, ["plateau"]),  # 25 > 1.5 x 16
        ({0: (16, 20, 3, 1, 0), 1: (18, 22, 1, 2, 0)}, ["duplicates"]),  # 4 > 5% of 70
        ({0: (16, 20, 0, 3, 0), 1: (18, 22, 1, 2, 0)}, ["stale"]),  # 5 > 10% of 42
        ({0: (16, 20, 0, 1, 1), 1: (18, 22, 1, 2, 0)}, ["trust"]),
        ({0: (0, 20, 0, 1, 0), 1: (18, 22, 1, 2, 0)}, ["plateau"]),  # nothing to compare
    ],
)
def test_targets(on: dict[int, tuple[int, int, int, int, int]], missed: list[str]) -> None:
    data = report.build(
        {"jobs": 300, "users": 2, "days": 180, "seed": 1},
        _result("off", OFF),
        _result("on", on),
    )
    assert [t["name"] for t in data["targets"] if not t["passed"]] == missed


def test_the_table_has_a_row_per_user_and_a_total_and_the_plot_is_svg() -> None:
    data = report.build(
        {"jobs": 300, "users": 2, "days": 180, "seed": 1},
        _result("off", OFF),
        _result("on", {0: (16, 20, 0, 1, 0), 1: (18, 22, 1, 2, 0)}),
    )
    rows = report.table_rows(data)
    assert [r[:2] for r in rows] == [
        ["off", "u0"],
        ["off", "u1"],
        ["off", "all"],
        ["on", "u0"],
        ["on", "u1"],
        ["on", "all"],
    ]
    assert rows[2][3] == "95" and rows[2][5] == "70"
    assert rows[0][8] == "2000"  # the mean of u0's jobs in the stream's last third
    md = report.markdown(data)
    assert "| on | all | 34 | 42 | 1.24x | 1 | 3 | 0 |" in md
    root = ET.fromstring(report.svg(data))
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 3 * 2 * 2
