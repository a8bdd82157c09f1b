"""Configuration: every setting is an environment variable `REFLECTION_<NAME>` (or `.env`).

Built once per process with `get_settings()`; never at import time, so a forking worker
builds it after fork and tests can change the environment between cases.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reflection import constants as c
from reflection.evidence import DEFAULT_TRUSTED_LINE_PATTERN, compile_trusted_pattern
from reflection.frontmatter import MAX_FRONTMATTER_BYTES
from reflection.shipped import BUILTIN_PIECES_DIR
from reflection.similarity import DEFAULT_THRESHOLD


class Settings(BaseSettings):
    """All worker settings with their defaults (the README lists them)."""

    model_config = SettingsConfigDict(
        env_prefix="REFLECTION_", env_file=".env", extra="ignore", frozen=True
    )

    # Services.
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/reflection"

    # Files.
    user_folder_root: Path = Path("data/users")
    # Unset or empty: the pieces shipped in the package, wherever it is installed.
    pieces_dir: Path = BUILTIN_PIECES_DIR

    # LLM.
    llm_endpoint: str = "http://127.0.0.1:4000/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr = SecretStr("")
    llm_proxy: bool = False
    llm_context_limit_tokens: int = Field(default=32000, ge=1000)
    llm_max_output_tokens: int = Field(default=2048, ge=64)
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1, le=10)
    llm_backoff_base_seconds: float = Field(default=1.0, ge=0)
    llm_backoff_max_seconds: float = Field(default=20.0, ge=0)
    # LLM outage (`reflection.breaker`): while the endpoint is down, runs are deferred
    # for up to this long since they first met the outage, then fail `llm_unavailable`.
    llm_outage_retry_hours: float = Field(default=6, ge=0)
    # While the breaker is open: the pause after a failed probe before the next one, and
    # about how long a deferred run waits before asking again.
    llm_outage_probe_seconds: float = Field(default=30, gt=0, le=600)

    # Limits of what a reflection may read and write.
    activity_log_max_bytes: int = Field(default=4096, ge=256)
    # Memory bodies in one prompt, in all (0: no limit); the entries least related to
    # the job show only name, type and description beyond it.
    prompt_memory_max_bytes: int = Field(default=6144, ge=0)
    # A longer body would make its file larger than memory loading reads (it would be
    # skipped as malformed): the file's limit less the frontmatter's.
    max_entry_body_bytes: int = Field(
        default=8192, ge=64, le=c.MAX_MEMORY_FILE_BYTES - MAX_FRONTMATTER_BYTES - 16
    )
    max_changes_per_run: int = Field(default=8, ge=1)
    max_memory_entries: int = Field(default=200, ge=1)
    piece_edit_cooldown_hours: float = Field(default=24, ge=0)
    # guarded: an accepted piece edit is written unless it changes the instruction or
    # persona of a movement that can edit files or run a shell, or removes a movement or
    # a route into one: that one is staged (`reflection.pieces.guarded_reasons`); auto:
    # every accepted edit is written; review: every one is staged as a proposal that an
    # operator approves (`reflection approve`) or rejects.
    piece_edit_mode: Literal["guarded", "auto", "review"] = "guarded"
    store_llm_raw: bool = False
    # Evidence and near-duplicates (SPEC §11, docs/memory.md). An activity-log line that
    # speaks for the user (a regex); a user/feedback entry must quote one, or the request.
    trusted_line_pattern: str = DEFAULT_TRUSTED_LINE_PATTERN
    # An add at least this similar to an existing entry is `near_duplicate`; 0.57 is the
    # best F1 on tests/tables/near_duplicates.txt (precision 0.944, recall 0.962).
    near_duplicate_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)

    # Consolidation (SPEC §11, `reflection.consolidation`): a pass after a reflection that
    # leaves this many live entries, if the last pass is older than the interval; a
    # Celery beat sweep every so many hours (0: off; fractions allowed).
    consolidate_at_entries: int = Field(default=40, ge=1)
    consolidate_min_interval_hours: float = Field(default=24, ge=0)
    consolidate_every_hours: float = Field(default=24, ge=0)
    consolidate_max_removals: int = Field(default=10, ge=0)
    consolidate_max_changes: int = Field(default=24, ge=1, le=64)
    # An entry unconfirmed and unchanged this long may be retired by a consolidation.
    stale_days: float = Field(default=90, ge=0)

    # Locks and delivery.
    lock_expire_seconds: int = Field(default=20, ge=3)
    # Below the expiry (python-redis-lock refuses a longer wait) and the lock client's
    # 10 s socket timeout (the wait is one blocking Redis call).
    lock_wait_seconds: int = Field(default=5, ge=0, le=8)
    claim_lease_seconds: int = Field(default=900, ge=10)
    broker_visibility_timeout: int = Field(default=3600, ge=3)
    task_time_limit: int = Field(default=900, ge=10)
    max_deliveries: int = Field(default=5, ge=1)
    # Reflections of one user in flight at once (0: no limit); more are deferred, so a
    # burst from one user never holds every worker slot.
    user_max_in_flight: int = Field(default=4, ge=0)
    # Runs of one worker process doing their non-LLM work at once (`reflection.turns`;
    # 0: none kept waiting, the GIL shares the core among all of them).
    cpu_turns: int = Field(default=2, ge=0, le=64)

    # Coalescing bursts (SPEC §12, `reflection.coalesce`): jobs of one user and piece
    # that finish within the window of each other are reflected in one LLM call
    # (0: every job alone, as before). A run waits until no new job of its user and
    # piece arrived for the window, at most the max wait, then takes up to max jobs.
    coalesce_window_seconds: float = Field(default=20, ge=0, le=600)
    coalesce_max_wait_seconds: float = Field(default=120, ge=0, le=3600)
    coalesce_max_jobs: int = Field(default=5, ge=1, le=20)

    # Prometheus metrics (`tasks.exporter`): the port each worker process serves (0: off);
    # a second process on the host finds it taken and serves the next free one.
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    metrics_addr: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes from another host or container

    # Logging.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def soft_time_limit(self) -> int:
        """Seconds a run may take before it stops on its own: Celery's soft limit in the
        prefork pool, the pipeline's own deadline in any pool (30 s before the hard
        limit, or half of it for short limits)."""
        return max(self.task_time_limit - 30, self.task_time_limit // 2)

    @model_validator(mode="after")
    def _wait_below_expiry(self) -> Settings:
        if self.lock_wait_seconds >= self.lock_expire_seconds:
            raise ValueError(
                f"REFLECTION_LOCK_WAIT_SECONDS ({self.lock_wait_seconds}) must be below "
                f"REFLECTION_LOCK_EXPIRE_SECONDS ({self.lock_expire_seconds})"
            )
        return self

    @field_validator("pieces_dir", mode="before")
    @classmethod
    def _builtin_when_empty(cls, v: object) -> object:
        return BUILTIN_PIECES_DIR if v in ("", None) else v

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not v.startswith(("postgresql", "sqlite")):
            raise ValueError(
                "REFLECTION_DATABASE_URL must be a postgresql+psycopg:// or sqlite URL"
            )
        return v

    @field_validator("trusted_line_pattern")
    @classmethod
    def _a_regex(cls, v: str) -> str:
        compile_trusted_pattern(v)  # ValueError names the bad regex
        return v

    @field_validator("llm_endpoint")
    @classmethod
    def _http_endpoint(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("REFLECTION_LLM_ENDPOINT must be an http(s) base URL")
        return v.rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()


# Settings whose value is never shown, even when it is the one refused.
_HIDDEN = frozenset({"llm_api_key"})
_URL_PASSWORD = re.compile(r"(//[^:/@\s]*:)[^@\s]*@")


def describe_invalid(e: ValidationError) -> str:
    """One line for an operator: each refused variable, its value (credentials hidden)
    and what it accepts, e.g. `invalid configuration: REFLECTION_PIECE_EDIT_MODE='bogus':
    Input should be 'guarded', 'auto' or 'review'`."""
    ours = e.title == Settings.__name__
    return "invalid configuration: " + "; ".join(
        _describe(err, ours) for err in e.errors(include_url=False)
    )


def _describe(err: Any, ours: bool) -> str:
    accepts = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:  # a rule across settings; its message names them
        return accepts
    field = str(err["loc"][0])
    name = f"REFLECTION_{field.upper()}" if ours else ".".join(map(str, err["loc"]))
    return f"{name}={_shown(field, err.get('input'))}: {accepts}"


def _shown(field: str, value: object) -> str:
    if field in _HIDDEN:
        return "'***'"
    from reflection.secrets import mask_secrets  # only on this error path: a heavy import

    text = mask_secrets(_URL_PASSWORD.sub(r"\1***@", str(value)))
    return repr(text if len(text) <= 120 else text[:117] + "...")


class _LogFormat(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLECTION_", env_file=".env", extra="ignore")

    log_format: Literal["text", "json"] = "text"


def log_format_of_environment() -> Literal["text", "json"]:
    """REFLECTION_LOG_FORMAT on its own, for reporting that the other settings are
    invalid in the format the operator asked for (`text` when it is invalid too)."""
    try:
        return _LogFormat().log_format
    except ValidationError:
        return "text"
