"""Flower as the README and docker compose run it: its basic-auth credentials come from
FLOWER_BASIC_AUTH, so its command line (what `ps` shows) holds no password."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TEST_BROKER_URL

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "flower-pw-0d1e2f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_flower_takes_its_password_from_the_environment(tmp_path: Path) -> None:
    """Started with FLOWER_BASIC_AUTH and no --basic-auth, Flower refuses a request
    without credentials, serves one with them, and its command line holds no password."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFLECTION_", "FLOWER_"))}
    env.update(REFLECTION_BROKER_URL=TEST_BROKER_URL, FLOWER_BASIC_AUTH=f"admin:{PASSWORD}")
    log = (tmp_path / "flower.log").open("wb")
    cmd = [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}",
           "--address=127.0.0.1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _status(url + "healthcheck") == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()
            time.sleep(0.2)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert PASSWORD not in cmdline and "basic" not in cmdline
        assert _status(url) == 401
        assert _status(url, f"admin:{PASSWORD}") == 200
        assert _status(url, "admin:wrong") == 401
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
