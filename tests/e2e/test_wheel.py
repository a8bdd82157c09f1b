"""The built wheel, installed in a clean venv outside the checkout, runs from any
directory: the CLI, migrations, doctor, the eval suite and a real worker (SPEC section
13); and it ships no test code.

Dependencies come from requirements.lock, as in the image (pip's cache makes a second
run fast; CI reaches PyPI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from reflection.clients import make_engine
from reflection.migrations import head_revision
from reflection.producer import make_producer, publish_reflect
from reflection.shipped import BUILTIN_PIECES_DIR, EVAL_SCENARIOS_DIR
from reflection.storage import reflection_metrics
from tests.conftest import TEST_BROKER_URL, TEST_DB_URL, TEST_REDIS_URL
from tests.e2e.conftest import ROOT, entry
from tests.support import worker as testing_worker
from tests.support.broker import empty_broker
from tests.support.db import create_jobs_table, insert_job, scratch_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

API_KEY = "sk-wheel-check-key-abcdef0123456789"
SOURCES = ("pyproject.toml", "README.md", "reflection", "tasks")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (as the image's first stage does), so
    the build leaves nothing in the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(path, src / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work), str(src)],
        cwd=work,
    )
    [built] = work.glob("reflection_worker-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv outside the checkout: the lock's dependencies, then the wheel alone."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(home)], cwd=home.parent)
    # --no-compile: bytecode is written at first import; compiling every file of the
    # dependencies up front took most of the install's time.
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    _run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.lock")], cwd=home.parent)
    _run([*pip, "--no-deps", str(wheel)], cwd=home.parent)
    return home


def test_the_wheel_ships_the_data_and_no_test_code(wheel: Path) -> None:
    """Migrations, pieces, scenarios, prompts and the scripted LLM are in; reflection/
    testing, tests, the benchmark and the fault injector are not."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "reflection/migrations/env.py",
        "reflection/migrations/script.py.mako",
        "reflection/prompts/system.md",
        "reflection/prompts/user.md",
        "reflection/devtools/scripted_llm.py",
        "tasks/celeryconfig.py",
        *(
            f"reflection/migrations/versions/{p.name}"
            for p in (ROOT / "reflection/migrations/versions").glob("*.py")
        ),
        *(f"reflection/builtin_pieces/{p.name}" for p in BUILTIN_PIECES_DIR.glob("*.yaml")),
        *(f"reflection/evals/scenarios/{p.name}" for p in EVAL_SCENARIOS_DIR.glob("*.yaml")),
    }
    assert expected <= names, sorted(expected - names)
    tops = {n.split("/")[0] for n in names}
    assert tops == {"reflection", "tasks", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not [n for n in names if n.startswith("reflection/testing/")]
    assert not [n for n in names if Path(n).name.startswith(("test_", "conftest"))]
    faults = zipfile.ZipFile(wheel).read("reflection/faults.py").decode()
    assert "import signal" not in faults and "os.kill" not in faults  # a hook slot only


@pytest.fixture
def wheel_db(pg_engine_session: object) -> Iterator[str]:
    """An empty database of its own, dropped afterwards: `reflection migrate` fills it."""
    with scratch_database(TEST_DB_URL, "_wheel") as url:
        yield url


def _scripted_llm(venv: Path, script: Path, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """The scripted OpenAI-compatible server, from the installed package; its base URL."""
    cmd = [
        str(venv / "bin" / "python"),
        "-m",
        "reflection.devtools.scripted_llm",
        "--port",
        "0",
        "--script",
        str(script),
        "--require-key",
        API_KEY,
    ]
    server = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    first = server.stdout.readline()  # "listening on http://127.0.0.1:PORT/v1", or EOF
    assert first.startswith("listening on "), f"the scripted LLM did not start: {first!r}"
    return server, first.removeprefix("listening on ").strip()


def test_the_installed_package_runs_outside_the_checkout(
    venv: Path, wheel_db: str, redis_client: object, tmp_path: Path
) -> None:
    """From a folder outside the checkout: --help, migrate, doctor, eval on the shipped
    suite, and a real `celery -A tasks worker` that reflects one job."""
    where = tmp_path / "elsewhere"
    where.mkdir()
    users = where / "users"
    users.mkdir()
    bin_ = venv / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REFLECTION_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{bin_}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONUNBUFFERED="1",
        REFLECTION_DATABASE_URL=wheel_db,
        REFLECTION_BROKER_URL=TEST_BROKER_URL,
        REFLECTION_REDIS_URL=TEST_REDIS_URL,
        REFLECTION_USER_FOLDER_ROOT=str(users),
        REFLECTION_LLM_API_KEY=API_KEY,
        REFLECTION_LLM_MODEL="scripted-1",
    )
    found = _run(
        [
            str(bin_ / "python"),
            "-c",
            "import reflection, tasks; print(reflection.__file__); print(tasks.__file__)",
        ],
        where,
        env,
    )
    assert all(line.startswith(str(venv)) for line in found.splitlines()), found
    assert "Usage: reflection" in _run([str(bin_ / "reflection"), "--help"], where, env)
    assert "doctor" in _run([str(bin_ / "reflection"), "doctor", "--help"], where, env)

    # The shipped migrations create the tables; the platform's `jobs` comes from its DDL.
    out = _run([str(bin_ / "reflection"), "migrate"], where, env)
    assert f"migrated from nothing to {head_revision()}" in out
    engine = make_engine(wheel_db)
    create_jobs_table(engine)
    insert_job(engine, "job-wheel", user_id="alice")

    # One scripted server for the eval suite's references and the worker's job.
    script = json.loads(_run([str(bin_ / "python"), "-m", "reflection.evals.scripted"], where, env))
    script["rules"].append(
        {"match": "job id: job-wheel\n", "replies": [{"content": entry("job-wheel")}]}
    )
    (where / "script.json").write_text(json.dumps(script))
    llm, base_url = _scripted_llm(venv, where / "script.json", where)
    proc = None
    try:
        env["REFLECTION_LLM_ENDPOINT"] = base_url
        report = json.loads(_run([str(bin_ / "reflection"), "doctor", "--json"], where, env))
        assert report["ok"], report
        pieces = {c["name"]: c for c in report["checks"]}["pieces"]["detail"]
        assert pieces.startswith(str(venv)), pieces  # the shipped pieces, by default
        _run(
            [
                str(bin_ / "reflection"),
                "eval",
                "--only",
                "learn-*",
                "--fail-under",
                "1",
                "--out",
                str(where / "report.json"),
            ],
            where,
            env,
        )

        empty_broker(TEST_BROKER_URL)
        proc = testing_worker.start_worker(
            env,
            where / "worker.log",
            "--pool",
            "threads",
            name="wheel",
            cwd=where,
            python=str(bin_ / "python"),
        )
        producer = make_producer(TEST_BROKER_URL)
        try:
            task_id = publish_reflect(
                producer,
                original_job_id="job-wheel",
                user_id="alice",
                piece_name="default",
                outcome="succeeded",
            )
        finally:
            producer.close()
        row = _wait_for_row(engine, task_id, proc, where / "worker.log")
        assert row["outcome"] == "applied"
        assert (users / "alice" / "memory" / "lesson-job-wheel.md").is_file()
    finally:
        if proc is not None:
            testing_worker.stop_worker(proc)
        llm.terminate()
        llm.communicate(timeout=30)  # waits, and closes its stdout pipe
        engine.dispose()


def _wait_for_row(
    engine: Engine, task_id: str, proc: subprocess.Popen[bytes], log: Path
) -> dict[str, object]:
    query = select(reflection_metrics).where(reflection_metrics.c.reflection_job_id == task_id)
    for _ in range(900):
        with engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is not None:
            return dict(row)
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(0.1)
    pytest.fail(f"the job was never reflected; worker log:\n{log.read_text()[-4000:]}")
