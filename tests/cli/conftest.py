"""The CLI against the real Postgres/Redis and the scripted LLM: the same settings as the
`env` fixture, handed to the CLI through REFLECTION_* variables."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from typer.testing import CliRunner, Result

from reflection.cli.app import app
from reflection.settings import get_settings
from tests.conftest import TEST_BROKER_URL, TEST_DB_URL, TEST_REDIS_URL
from tests.integration import conftest as integration
from tests.integration.conftest import API_KEY, Env

env = integration.env  # the pipeline fixture, shared


@dataclass
class Cli:
    env: Env
    monkeypatch: pytest.MonkeyPatch
    runner: CliRunner

    def __call__(self, *args: str) -> Result:
        get_settings.cache_clear()
        return self.runner.invoke(app, list(args))

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def set(self, name: str, value: str) -> None:
        """A setting for the CLI and for the in-process pipeline (`env.run`)."""
        self.monkeypatch.setenv(f"REFLECTION_{name.upper()}", value)
        self.env.settings(**{name: value})


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The broker Redis (a test database number), flushed."""
    client = redis.Redis.from_url(TEST_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def cli(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Cli]:
    s = env.deps.settings
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in {
        "DATABASE_URL": TEST_DB_URL,
        "REDIS_URL": TEST_REDIS_URL,
        "BROKER_URL": TEST_BROKER_URL,
        "USER_FOLDER_ROOT": str(s.user_folder_root),
        "PIECES_DIR": str(s.pieces_dir),
        "LLM_ENDPOINT": s.llm_endpoint,
        "LLM_API_KEY": API_KEY,
        "LLM_MODEL": "scripted-1",
        "LLM_BACKOFF_BASE_SECONDS": "0.01",
        "LLM_BACKOFF_MAX_SECONDS": "0.05",
        "LLM_TIMEOUT_SECONDS": "5",
        "LOCK_WAIT_SECONDS": "1",
    }.items():
        monkeypatch.setenv(f"REFLECTION_{name}", value)
    yield Cli(env, monkeypatch, CliRunner())
    logger = logging.getLogger("reflection")  # the CLI bound a handler to the runner's stderr
    logger.handlers, logger.propagate = [], True
