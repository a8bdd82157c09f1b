"""A private PostgreSQL server in a temporary folder, for tests that stop it: the shared
server (5432) is never stopped, other people's tests run on it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class PrivatePostgresError(RuntimeError):
    """Raised when no private server can be started here (no binaries, no user to run
    them as); the message says what is missing."""


@dataclass
class PrivatePostgres:
    """A server of our own: `url` points at its `postgres` database."""

    bin_dir: Path
    data: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", log, "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise PrivatePostgresError("no initdb under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def _as_user() -> list[str]:
    """initdb refuses to run as root: run the server as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise PrivatePostgresError("running as root and there is no `postgres` user") from e
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Create, start and finally stop and delete a private server."""
    bin_dir, as_user = _bin_dir(), _as_user()
    root = Path(tempfile.mkdtemp(prefix="reflection-pg-"))
    data = root / "data"
    data.mkdir()
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    pg = PrivatePostgres(bin_dir, data, _free_port(), as_user)
    try:
        pg._run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                "--no-sync", "--no-instructions")  # fmt: skip
        pg.start()
        yield pg
    finally:
        if pg.running():
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
