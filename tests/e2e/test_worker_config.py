"""A worker started with a refused setting exits at once with one line that names it,
in the log format asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("PIECE_EDIT_MODE", "bogus", None),
        ("DATABASE_URL", "mysql://app:hunter2secret@db/app", "hunter2secret"),
        ("TASK_TIME_LIMIT", "soon", None),
    ],
)
def test_the_worker_exits_with_one_line_naming_the_variable(
    fmt: str, name: str, value: str, secret: str | None
) -> None:
    """`celery -A tasks worker` with a bad REFLECTION_* value: exit 2, nothing on stdout,
    one line on stderr (a JSON object in JSON mode) with the variable, no password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLECTION_")}
    env.update({f"REFLECTION_{name}": value, "REFLECTION_LOG_FORMAT": fmt})
    cmd = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "reflection"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    message = json.loads(line)["msg"] if fmt == "json" else line
    assert f"invalid configuration: REFLECTION_{name}=" in message
    if secret:
        assert secret not in done.stderr
