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
    stderr_log: Path | None = None,
    cwd: Path = ROOT,
    python: str = sys.executable,
) -> subprocess.Popen[bytes]:
    """Start `python -m celery -A <app> worker` in `cwd`, its output appended to `log`
    (its stderr to `stderr_log` when given); return once it is ready."""
    cmd = [
        python, "-m", "celery", "-A", app, "worker", "-Q", "reflection",
        "--pool", pool, "--concurrency", str(concurrency),
        "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "--without-gossip", "--without-mingle", "--loglevel", "INFO", *extra,
    ]  # fmt: skip
    logs = [log] if stderr_log is None else [log, stderr_log]
    with log.open("ab") as out, (stderr_log or log).open("ab") as err:
        to_err = subprocess.STDOUT if stderr_log is None else err
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=to_err)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("ready." in p.read_text(errors="replace") for p in logs):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    output = "".join(p.read_text(errors="replace") for p in logs)
    raise WorkerStartError(f"the worker did not start; its log:\n{output[-4000:]}")


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
