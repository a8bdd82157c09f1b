"""A pipeline wired to the real Postgres and Redis and a scripted LLM over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from reflection.devtools.scripted_llm import ScriptedLlmServer
from reflection.llm import LlmClient
from reflection.paths import UserPaths
from reflection.pipeline import Deps, RunReport, run_reflection
from reflection.settings import Settings
from reflection.shipped import BUILTIN_PIECES_DIR
from reflection.storage import reflection_metrics
from reflection.turns import Turns
from tests.conftest import TEST_DB_URL, TEST_REDIS_URL

API_KEY = "sk-test-worker-key-0123456789abcdef"


def decision(
    reasoning: str = "r",
    changes: list[dict[str, Any]] | None = None,
    piece_edit: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {"reasoning": reasoning, "memory_changes": changes or [], "piece_edit": piece_edit}


@dataclass
class Env:
    deps: Deps
    llm: ScriptedLlmServer
    engine: Engine
    root: Path

    def settings(self, **kw: Any) -> None:
        base = self.deps.settings.model_dump()
        base.update(kw)
        self.deps.settings = Settings(**base)

    def user(self, uid: str = "alice") -> UserPaths:
        return UserPaths(self.root, uid)

    def script(self, job_id: str, *replies: dict[str, Any]) -> None:
        """The LLM answers these replies (in order) to prompts about `job_id`."""
        script = self.llm.script
        script.setdefault("rules", []).append({"match": job_id, "replies": list(replies)})
        self.llm.set_script(script)

    def run(
        self,
        job_id: str,
        *,
        user_id: str = "alice",
        piece_name: str = "default",
        outcome: str = "succeeded",
        reflection_job_id: str | None = None,
    ) -> RunReport:
        kwargs = {
            "original_job_id": job_id,
            "user_id": user_id,
            "piece_name": piece_name,
            "outcome": outcome,
        }
        return run_reflection(
            self.deps, reflection_job_id=reflection_job_id or str(uuid.uuid4()), kwargs=kwargs
        )

    def metrics(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(reflection_metrics).order_by(reflection_metrics.c.id))
            return [dict(r) for r in rows.mappings()]

    def llm_calls(self) -> int:
        return sum(1 for r in self.llm.requests if r["path"].endswith("/chat/completions"))


@pytest.fixture
def env(pg_engine: Engine, redis_client: redis.Redis, user_root: Path) -> Iterator[Env]:
    with ScriptedLlmServer({"rules": []}, require_key=API_KEY) as srv:
        settings = Settings(
            database_url=TEST_DB_URL,
            redis_url=TEST_REDIS_URL,
            user_folder_root=user_root,
            pieces_dir=BUILTIN_PIECES_DIR,
            llm_endpoint=srv.base_url,
            llm_api_key=API_KEY,
            llm_model="scripted-1",
            llm_backoff_base_seconds=0.01,
            llm_backoff_max_seconds=0.05,
            llm_timeout_seconds=5,
            lock_wait_seconds=1,
        )
        client = LlmClient(settings)
        deps = Deps(
            settings=settings,
            engine=pg_engine,
            redis=redis_client,
            llm=client,
            turns=Turns(settings.cpu_turns),  # as the worker has them
        )
        yield Env(deps=deps, llm=srv, engine=pg_engine, root=user_root)
        client.close()
