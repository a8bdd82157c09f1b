"""The worker's log level comes from REFLECTION_LOG_LEVEL: INFO is one line per run,
DEBUG one per stage."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from reflection.settings import Settings, get_settings
from tasks.resources import _init_process


@pytest.mark.parametrize("level", ["DEBUG", "WARNING"])
def test_the_worker_sets_the_configured_level(level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    logger, lock_logger = logging.getLogger("reflection"), logging.getLogger("redis_lock")
    saved = logger.level, logger.handlers[:], logger.propagate, lock_logger.level
    monkeypatch.setenv("REFLECTION_LOG_LEVEL", level)
    get_settings.cache_clear()
    try:
        _init_process()
        assert logger.level == getattr(logging, level)
        # python-redis-lock's per-run INFO lines only at DEBUG
        assert lock_logger.level == (logging.DEBUG if level == "DEBUG" else logging.WARNING)
    finally:
        get_settings.cache_clear()
        logger.setLevel(saved[0])
        logger.handlers, logger.propagate = saved[1], saved[2]
        lock_logger.setLevel(saved[3])


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="LOUD", _env_file=None)  # type: ignore[arg-type, call-arg]
