"""A refused setting is reported in one line that names the variable, shows its value
(credentials hidden) and says what it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from reflection.cli.app import app
from reflection.settings import (
    Settings,
    describe_invalid,
    get_settings,
    log_format_of_environment,
)
from reflection.shipped import BUILTIN_PIECES_DIR

CASES = [
    # (environment, what the line must say, what it must not)
    ({"PIECE_EDIT_MODE": "bogus"},
     ["REFLECTION_PIECE_EDIT_MODE='bogus'", "'guarded', 'auto' or 'review'"], []),
    ({"LLM_CONTEXT_LIMIT_TOKENS": "lots"},
     ["REFLECTION_LLM_CONTEXT_LIMIT_TOKENS='lots'", "valid integer"], []),
    ({"LLM_CONTEXT_LIMIT_TOKENS": "10"},
     ["REFLECTION_LLM_CONTEXT_LIMIT_TOKENS='10'", "greater than or equal to 1000"], []),
    ({"DATABASE_URL": "mysql://app:hunter2secret@db/app"},
     ["REFLECTION_DATABASE_URL='mysql://app:***@db/app'", "postgresql+psycopg://"],
     ["hunter2secret"]),
    ({"LLM_ENDPOINT": "gateway:4000?key=sk-abcdefghijklmnopqrstuvwxyz0123456789"},
     ["REFLECTION_LLM_ENDPOINT=", "http(s) base URL"], ["sk-abcdefghijklmnopqrstuvwxyz0123456789"]),
    ({"LOCK_WAIT_SECONDS": "6", "LOCK_EXPIRE_SECONDS": "5"},
     ["REFLECTION_LOCK_WAIT_SECONDS (6) must be below REFLECTION_LOCK_EXPIRE_SECONDS (5)"], []),
    ({"STORE_LLM_RAW": "maybe", "LOG_FORMAT": "xml"},
     ["REFLECTION_STORE_LLM_RAW='maybe'", "valid boolean", "REFLECTION_LOG_FORMAT='xml'",
      "'text' or 'json'"], []),
]  # fmt: skip


def _refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ValidationError:
    for name, value in env.items():
        monkeypatch.setenv(f"REFLECTION_{name}", value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    return caught.value


@pytest.mark.parametrize(("env", "says", "hides"), CASES)
def test_the_line_names_the_variable_the_value_and_what_is_allowed(
    env: dict[str, str], says: list[str], hides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each refused variable is named with its value and the rule it broke, in one line."""
    line = describe_invalid(_refused(monkeypatch, env))
    assert line.startswith("invalid configuration: ") and "\n" not in line
    for text in says:
        assert text in line
    for text in hides:
        assert text not in line


def test_the_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever is refused beside it, the key's value stays out of the line."""
    error = _refused(monkeypatch, {"LOG_LEVEL": "LOUD"})
    fake = ValidationError.from_exception_data(
        "Settings",
        [{"type": "string_type", "loc": ("llm_api_key",), "input": "sk-live-0123456789abcdef"}],
    )
    assert "REFLECTION_LOG_LEVEL='LOUD'" in describe_invalid(error)
    line = describe_invalid(fake)
    assert "REFLECTION_LLM_API_KEY='***'" in line and "sk-live" not in line


@pytest.mark.parametrize(("env", "says", "hides"), CASES[:4])
def test_the_cli_prints_it_and_exits_2(
    env: dict[str, str],
    says: list[str],
    hides: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`reflection stats` with a bad setting: the same line on stderr, exit code 2."""
    monkeypatch.chdir(tmp_path)  # no .env
    for name, value in env.items():
        monkeypatch.setenv(f"REFLECTION_{name}", value)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["stats"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid configuration: ")
    for text in says:
        assert text in result.stderr
    assert "Traceback" not in result.output


def test_the_log_format_alone_survives_other_bad_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The start-up error is written in the format asked for even when other settings
    are refused; an invalid format itself falls back to text."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFLECTION_PIECE_EDIT_MODE", "bogus")
    monkeypatch.setenv("REFLECTION_LOG_FORMAT", "json")
    assert log_format_of_environment() == "json"
    monkeypatch.setenv("REFLECTION_LOG_FORMAT", "xml")
    assert log_format_of_environment() == "text"


def test_an_empty_pieces_dir_means_the_shipped_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """REFLECTION_PIECES_DIR unset or empty (as docker compose passes it) is the built-in
    pieces inside the package, wherever it is installed."""
    monkeypatch.delenv("REFLECTION_PIECES_DIR", raising=False)
    assert Settings(_env_file=None).pieces_dir == BUILTIN_PIECES_DIR
    monkeypatch.setenv("REFLECTION_PIECES_DIR", "")
    assert Settings(_env_file=None).pieces_dir == BUILTIN_PIECES_DIR
    assert (BUILTIN_PIECES_DIR / "default.yaml").is_file()
