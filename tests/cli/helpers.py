"""Shared scripts and probes for the CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from reflection import storage
from reflection.shipped import BUILTIN_PIECES_DIR
from tests.integration.conftest import Env

BUILTIN = BUILTIN_PIECES_DIR / "default.yaml"


def tuned_piece(marker: str = "(tuned)") -> dict[str, str]:
    """A valid, non-widening edit of the built-in `default` piece."""
    text = BUILTIN.read_text()
    line = next(x for x in text.splitlines() if x.startswith("description:"))
    return {"yaml": text.replace(line, f"{line} {marker}", 1), "summary": "clearer description"}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def row_counts(engine: Engine) -> dict[str, int]:
    tables = (
        storage.reflection_metrics,
        storage.piece_edits,
        storage.reflection_claims,
        storage.piece_proposals,
    )
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in tables
        }


def rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def no_traceback(output: str) -> bool:
    return "Traceback" not in output


def applied_run(env: Env, job_id: str, changes: list[dict[str, Any]]) -> Path:
    """Reflect on `job_id` in-process with these changes; its snapshot folder."""
    from tests.integration.conftest import decision

    env.script(job_id, {"content": decision("learned", changes)})
    report = env.run(job_id)
    assert report.snapshot_dir is not None
    return report.snapshot_dir
