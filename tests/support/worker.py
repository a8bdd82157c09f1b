"""Start and stop a real `celery -A <app> worker -Q reflection` process (tests, demo,
benchmarks): the same command the README and docker compose run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class WorkerStartError(RuntimeError):
    """Raised when the worker exits or is not ready in time; the message ends with its log."""


def start_worker(
    env: dict[str, str],
    log: Path,
    *extra: str,
    app: str = "tasks",
    pool: str = "prefork",
    concurrency: int = 2,
    name: str = "worker",
    timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """Start a worker with its output appended to `log`; return once it is ready."""
    cmd = [
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "reflection",
        "--pool", pool, "--concurrency", str(concurrency),
        "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "--without-gossip", "--without-mingle", "--loglevel", "INFO", *extra,
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready." in log.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise WorkerStartError(f"the worker did not start; its log:\n{log.read_text()[-4000:]}")


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
