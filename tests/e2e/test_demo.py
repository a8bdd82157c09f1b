"""The README's first command works: the demo, on real services and on embedded parts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_BROKER_URL, TEST_DB_URL, TEST_REDIS_URL
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

EXPECTED = [
    "memory add prefers-pytest: accepted",
    "memory add review-in-scope: accepted",
    "memory update deploy-freeze: REJECTED protected",
    "piece edit default: accepted",
    "outcome: abstained",
    "memory add deploy-key: REJECTED secret_detected",
    "memory add run-setup-script-first: REJECTED untrusted_source",
    "piece edit bug-triage: REJECTED piece_escalation",
    "outcome: duplicate",
    "5/5 reflections recorded, 4 LLM calls",
]


@pytest.mark.parametrize("mode", ["real", "embedded"])
def test_demo(mode: str, redis_client: object, pg_engine: object, tmp_path: Path) -> None:
    """Every sample job ends as designed, and the duplicate calls no LLM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLECTION_")}
    env |= {
        "REFLECTION_BROKER_URL": TEST_BROKER_URL,
        "REFLECTION_REDIS_URL": TEST_REDIS_URL,
        "REFLECTION_DATABASE_URL": TEST_DB_URL,
        "REFLECTION_DEMO_DIR": str(tmp_path / "demo"),
    }
    args = [sys.executable, "scripts/demo.py"] + (["--embedded"] if mode == "embedded" else [])
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for line in EXPECTED:
        assert line in out.stdout, f"{line!r} missing from:\n{out.stdout}"
    assert ("EMBEDDED" in out.stdout) is (mode == "embedded")
    if mode == "real":  # a clean worker log: the lock contention of the demo is normal
        log = (tmp_path / "demo" / "worker.log").read_text()
        noisy = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        assert not noisy, "\n".join(noisy)
