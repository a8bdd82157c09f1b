"""Test-only fault injection at named points of a run (the fault suite of the README).

Set `REFLECTION_FAULT=<point>:<action>:<marker file>`; the first process to reach
`<point>` creates the marker and then performs `<action>`: `kill` (SIGKILL itself, as a
crashed worker would) or `sleep<seconds>` (a paused process, e.g. `sleep20`). Later
processes see the marker and pass. Unset — the production case — it costs one dict
lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

POINTS = (
    "before_llm",
    "after_llm",
    "after_journal",
    "between_writes",
    "after_files",
    "after_snapshot",
    "after_commit",
)


def fault_point(name: str) -> None:
    """Crash or pause here if the environment asks for it (tests only)."""
    spec = os.environ.get("REFLECTION_FAULT")
    if not spec:
        return
    point, action, marker = spec.split(":", 2)
    if point != name:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    Path(marker).write_text(f"{name} {action} pid={os.getpid()}\n")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep"):
        time.sleep(float(action[5:]))
