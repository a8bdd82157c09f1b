"""Lay a scenario out as the worker would find it (a user folder with memory, activity log
and piece copy) and read it back with the worker's own loaders."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reflection.evals.scenario import Noise, Scenario
from reflection.frontmatter import render_entry
from reflection.fsio import atomic_write, ensure_dir
from reflection.inputs import assemble_inputs
from reflection.memory import render_index
from reflection.models import Job, MemoryEntry, ReflectionInputs, ReflectRequest
from reflection.paths import UserPaths
from reflection.settings import Settings

FINISHED_AT = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)
"""Scenarios are timeless: every job finished at this instant, judged then."""

_TOOLS = ("Bash", "Read", "Grep", "Glob", "Edit", "WebFetch")
_LINES = (
    "{ts} tool={tool} status=ok elapsed={ms}ms",
    "{ts} DEBUG cache miss key=obj:{n} shard={m}",
    "{ts} INFO GET /api/v1/items?page={m} 200 {ms}ms",
    "{ts} PASS src/module_{m}/test_case_{n}.py::test_{n} ({ms}ms)",
    "{ts} webpack: compiled module {n} of {big} in {ms}ms",
    "{ts} npm http fetch GET 200 https://registry.npmjs.org/pkg-{n} {ms}ms",
    "{ts} worker[{m}] heartbeat ok queue_depth={n}",
    "{ts} WARN deprecated option --legacy-{m} ignored",
)


def noise_text(noise: Noise) -> str:
    """`noise.bytes` of realistic, meaningless tool output, the same for the same seed."""
    rng = random.Random(noise.seed)
    t = FINISHED_AT - timedelta(hours=2)
    lines: list[str] = []
    size = 0
    while size < noise.bytes:
        t += timedelta(milliseconds=rng.randint(1, 900))
        line = rng.choice(_LINES).format(
            ts=t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            tool=rng.choice(_TOOLS),
            ms=rng.randint(1, 4000),
            n=rng.randint(1, 99999),
            m=rng.randint(1, 64),
            big=rng.randint(100000, 999999),
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[: noise.bytes - 1] + "\n"


def activity_text(scenario: Scenario) -> str:
    if scenario.noise is None:
        return scenario.activity
    filler = noise_text(scenario.noise)
    if scenario.noise.where == "before":
        return filler + scenario.activity
    return scenario.activity.rstrip("\n") + "\n" + filler


def job_of(scenario: Scenario) -> Job:
    j = scenario.job
    return Job(
        id=scenario.job_id,
        user_id=scenario.user_id,
        piece_name=j.piece,
        status=j.outcome,
        task=j.task,
        result=j.result,
        error=j.error,
        created_at=FINISHED_AT - timedelta(minutes=j.duration_minutes),
        finished_at=FINISHED_AT,
    )


def request_of(scenario: Scenario) -> ReflectRequest:
    return ReflectRequest(
        original_job_id=scenario.job_id,
        user_id=scenario.user_id,
        piece_name=scenario.job.piece,
        outcome=scenario.job.outcome,
    )


def last_piece_edit_at(scenario: Scenario) -> datetime | None:
    hours = scenario.piece_edited_hours_ago
    return None if hours is None else FINISHED_AT - timedelta(hours=hours)


def materialize(scenario: Scenario, settings: Settings) -> tuple[ReflectionInputs, UserPaths]:
    """Write the scenario under `settings.user_folder_root` and load it as a run would."""
    paths = UserPaths(settings.user_folder_root, scenario.user_id)
    ensure_dir(paths.memory_dir)
    entries = [
        MemoryEntry(
            name=e.name, description=e.description, type=e.type, body=e.body, protected=e.protected
        )
        for e in scenario.memory
    ]
    for entry in entries:
        atomic_write(paths.memory_file(entry.name), render_entry(entry))
    for filename, raw in scenario.memory_files.items():
        atomic_write(paths.memory_dir / Path(filename).name, raw)
    if entries:
        atomic_write(paths.memory_index, render_index(entries))
    log_path = paths.activity_log(scenario.job_id)
    ensure_dir(log_path.parent)
    atomic_write(log_path, activity_text(scenario))
    if scenario.piece_yaml is not None:
        copy = paths.piece_copy(scenario.job.piece)
        ensure_dir(copy.parent)
        atomic_write(copy, scenario.piece_yaml)
    inputs = assemble_inputs(
        request=request_of(scenario),
        job=job_of(scenario),
        paths=paths,
        pieces_dir=settings.pieces_dir,
        activity_log_max_bytes=settings.activity_log_max_bytes,
    )
    return inputs, paths
