"""The hostile corpus runs the real pipeline in-process (the integration `env`: real
Postgres and Redis, the openai SDK over HTTP to the scripted LLM) and checks, around every
run, that nothing outside the allowed parts of `<root>/<uid>/` changed."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from reflection.models import Outcome
from reflection.pipeline import RunReport, run_reflection
from reflection.shipped import BUILTIN_PIECES_DIR
from tests.integration.conftest import Env, decision, env
from tests.support import db as testdb
from tests.support.db import EVIDENCE

__all__ = ["Env", "Hostile", "decision", "env", "hostile"]

BUILTIN_PIECES = BUILTIN_PIECES_DIR
CANARY = "outside the user's folder; must never change\n"

# path (relative to the snapshot root) -> (kind, mode, content or link target)
Tree = dict[str, tuple[str, int, bytes]]


def snapshot_tree(root: Path) -> Tree:
    """Every path under `root`: kind, permission bits and content (links not followed)."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            mode = stat.S_IMODE(st.st_mode)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p).encode())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, b"")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", mode, p.read_bytes())
            else:
                out[rel] = ("other", mode, b"")
    return out


def changed_paths(before: Tree, after: Tree) -> set[str]:
    """Paths added, removed or changed (kind, mode or content)."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def check_changes(before: Tree, after: Tree, uid: str, outcome: Outcome) -> set[str]:
    """Assert the run's footprint: nothing for failed or duplicate runs; only the snapshot
    and index for abstained and rejected ones; memory/, pieces/ and reflections/ of the
    user's own folder for applied ones; every new path with sane permissions."""
    changed = changed_paths(before, after)
    home = f"users/{uid}"
    if outcome in (Outcome.FAILED, Outcome.DUPLICATE):
        assert not changed, f"a {outcome.value} run changed {sorted(changed)}"
        return changed
    areas = ["reflections"] + (["memory", "pieces"] if outcome is Outcome.APPLIED else [])
    for rel in changed:
        inside = rel == home or any(
            rel == f"{home}/{a}" or rel.startswith(f"{home}/{a}/") for a in areas
        )
        assert inside, f"{outcome.value} run changed {rel}, outside {home}/{areas}"
        if rel == home:
            assert rel not in before and after[rel][0] == "dir", "the home was altered"
        if rel in after:
            kind, mode, _ = after[rel]
            assert kind in ("file", "dir"), f"{rel} became a {kind}"
            assert mode & 0o027 == 0, f"{rel} has mode {oct(mode)}"
    journals = [k for k in after if "/.journal/" in k and k not in before]
    assert not journals, f"journals left behind: {journals}"
    return changed


@dataclass
class Hostile:
    """Runs one hostile case through the real pipeline and checks its footprint."""

    env: Env
    tmp: Path
    outside: Path
    reports: list[RunReport] = field(default_factory=list)

    def user(self, uid: str = "alice") -> Any:
        return self.env.user(uid)

    def entry(
        self, name: str, body: str = "b", *, protected: bool = False, uid: str = "alice"
    ) -> Path:
        """Write a well-formed memory entry."""
        mem = self.user(uid).memory_dir
        mem.mkdir(parents=True, exist_ok=True)
        extra = "protected: true\n" if protected else ""
        path: Path = mem / f"{name}.md"
        path.write_text(
            f"---\nname: {name}\ndescription: d {name}\ntype: project\n{extra}---\n{body}"
        )
        return path

    def job(self, job_id: str, **kw: Any) -> None:
        testdb.insert_job(self.env.engine, job_id, **kw)

    def run(
        self,
        job_id: str,
        reply: object | None = None,
        *,
        uid: str = "alice",
        piece: str = "default",
        make_job: bool = True,
        kwargs: Mapping[str, Any] | None = None,
        reflection_job_id: str | None = None,
        job_kw: Mapping[str, Any] | None = None,
    ) -> RunReport:
        """Script `reply`, run the job, and check what changed on disk and in metrics."""
        if make_job:
            self.job(job_id, user_id=uid, piece_name=piece, **(job_kw or {}))
        if reply is not None:
            self.env.script(job_id, {"content": reply})
        args = (
            dict(kwargs)
            if kwargs is not None
            else {
                "original_job_id": job_id,
                "user_id": uid,
                "piece_name": piece,
                "outcome": "succeeded",
            }
        )
        before, pieces_before = snapshot_tree(self.tmp), snapshot_tree(BUILTIN_PIECES)
        report = run_reflection(
            self.env.deps, reflection_job_id=reflection_job_id or str(uuid.uuid4()), kwargs=args
        )
        after = snapshot_tree(self.tmp)
        check_changes(before, after, uid, report.outcome)
        assert snapshot_tree(BUILTIN_PIECES) == pieces_before, "a built-in piece changed"
        row = self.env.metrics()[-1]
        assert row["reflection_job_id"] == report.reflection_job_id
        assert row["outcome"] == report.outcome.value
        assert row["error_code"] == report.error_code
        assert len(row["original_job_id"]) <= 128 and row["original_job_id"].isprintable()
        assert len(row["user_id"]) <= 128 and row["user_id"].isprintable()
        self.reports.append(report)
        return report

    def canary_intact(self) -> None:
        """The files outside the user's folder are as planted."""
        for p in self.outside.rglob("*"):
            if p.is_file():
                assert p.read_text() == CANARY, f"{p} changed"


def codes(report: RunReport) -> list[str]:
    """The decision codes of a run, in order."""
    return [d.code.value for d in report.verdicts]


def expect(report: RunReport, expected: str | list[str]) -> None:
    """`expected` is a failure code (str) or the list of decision codes."""
    if isinstance(expected, str):
        assert report.outcome is Outcome.FAILED, (report.outcome, codes(report), report.detail)
        assert report.error_code == expected, (report.error_code, report.detail)
        return
    assert codes(report) == expected, [(d.code.value, d.detail) for d in report.verdicts]
    if not expected:
        assert report.outcome is Outcome.ABSTAINED
    elif "ok" in expected:
        assert report.outcome is Outcome.APPLIED
    else:
        assert report.outcome is Outcome.REJECTED


def builtin_piece(name: str = "default") -> dict[str, Any]:
    """A built-in piece, parsed."""
    data = yaml.safe_load((BUILTIN_PIECES / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def piece_yaml(change: Callable[[dict[str, Any]], object] | None = None) -> str:
    """The built-in default piece, changed in place by `change`, as YAML text."""
    data = builtin_piece()
    if change is not None:
        change(data)
    return yaml.safe_dump(data, sort_keys=False)


def movement(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The movement called `name` in a parsed piece."""
    found: dict[str, Any] = next(m for m in data["movements"] if m["name"] == name)
    return found


def edit(yaml_text: str, summary: str = "tune") -> dict[str, Any]:
    """A decision with only this piece edit."""
    return decision("improve the workflow", piece_edit={"yaml": yaml_text, "summary": summary})


def add(name: str, body: str = "A durable fact.", **kw: Any) -> dict[str, Any]:
    """An `add` memory change."""
    return {
        "op": "add",
        "evidence": EVIDENCE,
        "name": name,
        "description": "a fact",
        "type": "project",
        "body": body,
        **kw,
    }


@pytest.fixture
def hostile(env: Env) -> Hostile:
    """A harness over `env` with a canary folder outside the user folder root."""
    tmp = env.root.parent
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "canary.md").write_text(CANARY)
    (outside / "default.yaml").write_text(CANARY)
    (outside / "activity.log").write_text(CANARY)
    return Hostile(env=env, tmp=tmp, outside=outside)
