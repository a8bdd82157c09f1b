"""The smaller doors of issue 22, item 8, through the real pipeline (and Celery's app).

- The entry name `memory` is refused (`invalid_name`): `memory/memory.md` is the index
  `memory/MEMORY.md` on a case-insensitive file system.
- `merge_target` belongs to a remove (SPEC §4): an add or update carrying one is
  refused (`missing_field`, the change-shape rule that §14's order puts first after the
  name, text and type rules) instead of being accepted with the field ignored.
- Only `reflect` and `consolidate` are tasks of the worker's app; `result_expires` is
  None, so beat schedules no `celery.backend_cleanup`. (A real worker refusing a
  built-in from its queue: tests/hostile/test_queue_tasks_worker.py.)
- A folder at `MEMORY.md` fails the run naming the path:
  tests/hostile/test_special_files.py::test_a_folder_at_memory_md_fails_the_run_naming_it.
"""

from __future__ import annotations

import pytest
from celery.beat import Scheduler

from reflection.constants import QUEUE_TASKS
from tests.hostile.conftest import Hostile, add, decision, expect


@pytest.mark.integration
@pytest.mark.parametrize("name", ["memory", "Memory", "MEMORY"])
def test_the_entry_name_memory_is_refused(hostile: Hostile, name: str) -> None:
    report = hostile.run("job-mem", decision("r", [add(name), add("fine")]))
    expect(report, ["invalid_name", "ok"])
    assert not (hostile.user().memory_dir / "memory.md").exists()
    index = (hostile.user().memory_dir / "MEMORY.md").read_text()
    assert "- fine (project)" in index and "memory (" not in index


@pytest.mark.integration
def test_merge_target_on_an_add_or_update_is_refused(hostile: Hostile) -> None:
    h = hostile
    h.entry("kept")
    h.entry("old")
    update = {**add("kept", "new body"), "op": "update", "merge_target": "old"}
    changes = [add("new", merge_target="old"), update, {"op": "remove", "name": "old"}]
    report = h.run("job-merge", decision("r", changes))
    expect(report, ["missing_field", "missing_field", "ok"])
    assert [d.detail for d in report.verdicts[:2]] == [
        "merge_target is for remove only, not add",
        "merge_target is for remove only, not update",
    ]
    assert not (h.user().memory_dir / "new.md").exists()
    assert "new body" not in (h.user().memory_dir / "kept.md").read_text()


@pytest.mark.integration
def test_a_remove_still_merges_into_a_new_entry(hostile: Hostile) -> None:
    hostile.entry("old")
    changes = [add("merged"), {"op": "remove", "name": "old", "merge_target": "merged"}]
    expect(hostile.run("job-ok", decision("r", changes)), ["ok", "ok"])


def test_the_worker_app_has_only_the_queue_tasks() -> None:
    """Celery's built-ins are unregistered once the app is finalized: a message naming
    one is refused by the worker ("Received unregistered task"), not run."""
    from tasks import app

    assert set(app.tasks) <= QUEUE_TASKS
    assert "reflect" in app.tasks
    for builtin in ("celery.backend_cleanup", "celery.chord_unlock", "celery.map"):
        assert builtin not in app.tasks


def test_beat_schedules_no_backend_cleanup() -> None:
    from tasks import app

    assert app.conf.result_expires is None
    assert "celery.backend_cleanup" not in Scheduler(app=app, lazy=False).schedule
