"""The benchmark harness runs end to end (small counts; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.io_floor import CEILING_VARIANTS  # not bench.run: it registers the bench tasks
from reflection.cli.common import safe_url
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_bench_quick(tmp_path: Path, redis_client: object, pg_engine: object) -> None:
    """`python -m bench.run --quick` measures every scenario and writes its JSON."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,  # the coalescing scenario adds about a minute
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["task_events"] is True  # the workers run the README's -E
    for scenario in ("overhead", "ceiling", "in_flight", "isolation", "deferral"):  # one round
        [only] = data[scenario].pop("per_round")
        assert set(only) <= set(data[scenario]), only
    # The rest of the machine may spend no CPU tick over so short a run.
    assert data["in_flight"].pop("cpu_ms_per_reflection_other") >= 0
    for scenario in ("prompt", "overhead", "ceiling", "in_flight", "isolation", "deferral"):
        assert all(v > 0 for v in data[scenario].values()), data[scenario]
    assert {
        "ratio_vs_sleep",
        "ratio_vs_equal_cpu_task",
        "burst_ratio_vs_sleep",
        "cpu_ms_per_reflection_celery_loop",
        "cpu_ms_per_sleep_task_celery_loop",
    } <= set(data["in_flight"])
    assert {
        "floor_ratio_vs_noop",
        "ratio_vs_floor",
        "cpu_ms_per_floor_task",
        "io_floor_ratio_vs_floor",
        "ratio_vs_io_floor",
        "cpu_ms_per_io_floor_task",
    } <= set(data["overhead"])
    assert {f"{v}_ratio_vs_floor" for v in CEILING_VARIANTS} <= set(data["ceiling"])
    assert {"hot_drain_vs_cap_pace", "hot_deferrals_per_run"} <= set(data["isolation"])
    coalesce = data["coalesce"]
    assert set(coalesce.pop("per_round")) == {"burst_on", "burst_off", "spread", "spread_off"}
    assert coalesce["burst_calls_per_job_off"] == 1.0  # window 0: a call per job
    assert 0 < coalesce["burst_calls_per_job"] < 1.0  # bursts coalesced
    assert coalesce["spread_calls_per_job"] == 1.0
    cost = data["cost"]  # counts per run, the same on any machine (SPEC §12 budget)
    assert 0 < cost["cached_share_2nd_job"] < 1
    assert cost["fsyncs_per_run"] <= 4 and cost["postgres_round_trips_per_run"] <= 8
    assert cost["redis_round_trips_per_run"] <= 4


def test_bench_on_rabbitmq(tmp_path: Path, amqp_broker: str, pg_engine: object) -> None:
    """`--broker` runs the workers and the baselines on another broker and says which;
    `--without-task-events` drops the workers' -E and says so."""
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "--quick",
        "--only",
        "in_flight",
        "--broker",
        amqp_broker,
        "--without-task-events",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["broker"] == safe_url(amqp_broker)  # its password hidden
    assert data["task_events"] is False
    assert data["in_flight"]["reflections_per_s"] > 0 and "overhead" not in data


def test_cpu_profile_quick(redis_client: object, pg_engine: object) -> None:
    """`python -m bench.cpu_profile` runs whole reflections in-process and reports them."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cpu_profile", "--runs", "5", "--cprofile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "5 runs (under cProfile): wall" in proc.stdout and "function calls" in proc.stdout
