"""The worker's log level comes from REFLECTION_LOG_LEVEL: INFO is one line per run,
DEBUG one per stage. Every line it writes, its task module's and Celery's included, has
credentials masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from celery.signals import after_setup_logger
from pydantic import ValidationError

from reflection.logs import OWN_LOGGERS, LogFormat, configure_logging
from reflection.settings import Settings, get_settings
from reflection.text import find_unsafe_chars
from tasks.resources import _init_process

TOKEN = "ghp_Zq4T8vLw2NcR7yXb5KmP1sHd9GfJ3aEuQ0Wx"


@pytest.fixture(autouse=True)
def own_loggers() -> Iterator[None]:
    """Leave the worker's loggers as they were (other tests capture them)."""
    saved = [
        (lg, lg.level, lg.handlers[:], lg.propagate)
        for lg in map(logging.getLogger, (*OWN_LOGGERS, "redis_lock"))
    ]
    yield
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers, lg.propagate = handlers, propagate


def buffered(fmt: LogFormat) -> io.StringIO:
    buf = io.StringIO()
    configure_logging(fmt, stream=buf)
    return buf


@pytest.mark.parametrize("level", ["DEBUG", "WARNING"])
def test_the_worker_sets_the_configured_level(level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLECTION_LOG_LEVEL", level)
    get_settings.cache_clear()
    try:
        _init_process()
        for name in OWN_LOGGERS:
            assert logging.getLogger(name).level == getattr(logging, level)
        # python-redis-lock's per-run INFO lines only at DEBUG
        assert logging.getLogger("redis_lock").level == (
            logging.DEBUG if level == "DEBUG" else logging.WARNING
        )
    finally:
        get_settings.cache_clear()


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="LOUD", _env_file=None)


def test_the_task_modules_lines_are_formatted_and_masked() -> None:
    buf = buffered("json")
    logging.getLogger("tasks.reflect").warning("reflect t1 retrying: password=%s", TOKEN)
    [line] = buf.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["logger"] == "tasks.reflect" and "[REDACTED:" in doc["msg"]
    assert TOKEN not in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_is_masked_too(fmt: LogFormat) -> None:
    buf = buffered(fmt)
    try:
        raise RuntimeError(f"connect failed with token {TOKEN}")
    except RuntimeError:
        logging.getLogger("reflection.pipeline").exception("a bug")
    assert "RuntimeError" in buf.getvalue() and TOKEN not in buf.getvalue()


def test_celerys_own_log_handlers_are_masked() -> None:
    """Celery's lines (a task's retry or failure, with its exception) go through handlers
    it sets up itself; the worker masks them when Celery announces them."""
    buf = io.StringIO()
    logger = logging.Logger("celery-root-standin")
    logger.addHandler(logging.StreamHandler(buf))
    after_setup_logger.send(
        sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="", colorize=False
    )
    logger.error("Task reflect[t1] raised: OperationalError(%r)", f"token {TOKEN}")
    assert "Task reflect[t1]" in buf.getvalue() and TOKEN not in buf.getvalue()


def test_a_bad_format_call_elsewhere_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The filter sits on Celery's handlers, which every library's lines reach: a wrong
    number of arguments must stay logging's own error report, not an exception."""
    logger = logging.Logger("some-library")
    logger.addHandler(logging.StreamHandler(io.StringIO()))
    after_setup_logger.send(
        sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="", colorize=False
    )
    logger.warning("retry %s of %s", 1)  # one argument short
    assert "Logging error" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_control_characters_are_logged_escaped(fmt: LogFormat) -> None:
    """A message quoting a planted file name or value (ESC, C1, bidi, tags) is written
    with them escaped, so a log read in a terminal shows them and never acts on them."""
    buf = buffered(fmt)
    name = "memory/\x1b]52;c;eA==\x07\x9b2J\u202e\U000e0041.md"
    logging.getLogger("reflection.inputs").warning("malformed memory file %s skipped", name)
    out = buf.getvalue()
    assert find_unsafe_chars(out, allow="\n") == []
    shown = "memory/\\x1b]52;c;eA==\\x07\\x9b2J\\u202e\\U000e0041.md"
    assert shown in (json.loads(out)["msg"] if fmt == "json" else out)


def test_a_records_extra_fields_are_json_fields() -> None:
    """The run's ids, outcome and duration are fields of the JSON object, not only text."""
    buf = buffered("json")
    fields = {"job_id": "j1", "user_id": "u1", "outcome": "applied", "duration_ms": 12}
    logging.getLogger("reflection").info("done job=j1", extra=fields)
    doc = json.loads(buf.getvalue())
    assert {k: doc[k] for k in fields} == fields
    assert doc["level"] == "INFO" and doc["logger"] == "reflection" and doc["ts"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_celerys_handlers_take_the_configured_format(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In JSON mode Celery's own handlers write JSON; in text mode they keep Celery's
    layout. Both mask credentials."""
    monkeypatch.setenv("REFLECTION_LOG_FORMAT", fmt)
    get_settings.cache_clear()
    buf = io.StringIO()
    logger = logging.Logger("celery-root-standin")
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("[celery] %(message)s"))
    logger.addHandler(handler)
    after_setup_logger.send(
        sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="", colorize=False
    )
    logger.warning("Task reflect[t1] received with token %s", TOKEN)
    line = buf.getvalue().strip()
    assert TOKEN not in line
    if fmt == "json":
        assert json.loads(line)["msg"].startswith("Task reflect[t1] received")
    else:
        assert line.startswith("[celery] Task reflect[t1] received")
