"""The fault injector of the fault suite, installed only in workers the tests start.

`REFLECTION_FAULT=<point>:<action>:<marker file>`: the first process to reach `<point>`
(one of `reflection.faults.POINTS`) creates the marker and then performs `<action>`:
`kill` (SIGKILL itself, as a crashed worker would) or `sleep<seconds>` (a paused
process, e.g. `sleep20`). Later processes see the marker and pass.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reflection import faults


@dataclass(frozen=True)
class Fault:
    """What `REFLECTION_FAULT` asks for."""

    point: str
    action: str
    marker: Path


def parse(spec: str) -> Fault:
    """Read `<point>:<action>:<marker>`; a point or action that does not exist is an error,
    not a fault that never fires."""
    point, action, marker = spec.split(":", 2)
    if point not in faults.POINTS:
        raise faults.UnknownFaultPointError(
            f"REFLECTION_FAULT: unknown point {point!r}; one of {', '.join(sorted(faults.POINTS))}"
        )
    if action != "kill" and not (action.startswith("sleep") and _is_number(action[5:])):
        raise ValueError(f"REFLECTION_FAULT: unknown action {action!r}; kill or sleep<seconds>")
    return Fault(point, action, Path(marker))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def injector(fault: Fault) -> Callable[[str], None]:
    """The hook that performs `fault` once, in the first process to reach its point."""

    def hook(name: str) -> None:
        if name != fault.point:
            return
        try:
            fd = os.open(fault.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        os.close(fd)
        fault.marker.write_text(f"{name} {fault.action} pid={os.getpid()}\n")
        if fault.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            time.sleep(float(fault.action[5:]))

    return hook


def install_from_environment() -> None:
    """Install the injector `REFLECTION_FAULT` describes (nothing when it is unset)."""
    spec = os.environ.get("REFLECTION_FAULT")
    if spec:
        faults.install(injector(parse(spec)))
