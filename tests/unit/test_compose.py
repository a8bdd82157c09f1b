"""docker-compose.yml hands the containers every fixed setting name (SPEC section 8),
with the worker's own defaults: `.env` alone fills in only the compose file's ${...}."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from reflection.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIXED = (
    "BROKER_URL",
    "REDIS_URL",
    "DATABASE_URL",
    "USER_FOLDER_ROOT",
    "PIECES_DIR",
    "LLM_ENDPOINT",
    "LLM_MODEL",
    "LLM_API_KEY",
    "LLM_PROXY",
    "LLM_CONTEXT_LIMIT_TOKENS",
    "ACTIVITY_LOG_MAX_BYTES",
    "MAX_ENTRY_BODY_BYTES",
    "PIECE_EDIT_COOLDOWN_HOURS",
    "STORE_LLM_RAW",
)


def anchor() -> dict[str, str]:
    env: dict[str, str] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())[
        "x-reflection-env"
    ]
    return env


def test_every_fixed_name_reaches_the_containers() -> None:
    assert {f"REFLECTION_{n}" for n in FIXED} <= set(anchor())


LIMITS = (
    "LLM_PROXY",
    "LLM_CONTEXT_LIMIT_TOKENS",
    "LLM_MAX_OUTPUT_TOKENS",
    "ACTIVITY_LOG_MAX_BYTES",
    "MAX_ENTRY_BODY_BYTES",
    "PIECE_EDIT_COOLDOWN_HOURS",
    "PIECE_EDIT_MODE",
    "STORE_LLM_RAW",
)


def test_the_compose_defaults_are_the_workers() -> None:
    """(The services' URLs, the model and the log format are the stack's own choices.)"""
    defaults = Settings(_env_file=None)
    for name in LIMITS:
        m = re.fullmatch(r"\$\{REFLECTION_(\w+):-([^}]*)\}", anchor()[f"REFLECTION_{name}"])
        assert m is not None and m.group(1) == name
        value = getattr(defaults, name.lower())
        assert m.group(2) == (str(value).lower() if isinstance(value, bool) else str(value)), name


def _services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = data["services"]
    return services


def test_flowers_password_is_not_on_its_command_line() -> None:
    """Flower's credentials reach it as FLOWER_BASIC_AUTH (its own variable), so `ps`
    does not show the password; the worker's settings still reach it."""
    flower = _services()["flower"]
    assert not any("basic" in arg or "PASSWORD" in arg for arg in flower["command"])
    env = flower["environment"]
    assert (
        env["FLOWER_BASIC_AUTH"]
        == "${FLOWER_USER:?set FLOWER_USER}:${FLOWER_PASSWORD:?set FLOWER_PASSWORD}"
    )
    assert set(anchor()) <= set(env)


def test_the_worker_exposes_its_metrics_port() -> None:
    """Each worker container serves Prometheus metrics on the network, on the default
    port, unpublished on the host."""
    worker = _services()["worker"]
    port = str(Settings(_env_file=None).metrics_port)
    assert worker["expose"] == [port] and "ports" not in worker
    assert anchor()["REFLECTION_METRICS_PORT"] == "${REFLECTION_METRICS_PORT:-" + port + "}"
