"""What every command shares: the services, output helpers, exit codes and error handling.

Every command is wrapped by `handled`: an expected failure (a service down, a refused
operation, a conflict) becomes one line on stderr and a non-zero exit code, never a
traceback; with `--json`, also a JSON error object on stdout (`{"error": {"code",
"message", "exit_code"}}`). Exit codes: 0 ok, 1 the operation failed or was refused,
2 bad usage or configuration, 3 a service (Postgres, Redis, broker, LLM) is unreachable,
4 an id names nothing (a job, user, snapshot, proposal or memory entry: unknown, or not
an id at all), the same for every command.
"""

from __future__ import annotations

import difflib
import errno
import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import kombu.exceptions
import redis
import typer
from pydantic import ValidationError
from rich.text import Text
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from reflection.cli.terminal import SafeConsole, json_text
from reflection.clients import CLI, make_engine, make_llm, make_redis
from reflection.errors import (
    EntryNotFoundError,
    InfrastructureError,
    LockBusyError,
    ProposalNotFoundError,
    ReflectionError,
    RetryableError,
    RevertConflictError,
    UnsafePathError,
)
from reflection.llm import LlmClient
from reflection.paths import UserPaths
from reflection.pipeline import Deps
from reflection.settings import Settings, describe_invalid, get_settings
from reflection.storage import reports
from reflection.text import MULTILINE, escape_for_terminal

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
# The `code` of a JSON error object, by exit code, when the error has none of its own.
_CODES = {
    EXIT_FAILED: "failed",
    EXIT_USAGE: "usage",
    EXIT_UNAVAILABLE: "unavailable",
    EXIT_NOT_FOUND: "not_found",
}

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")
]

# No emoji codes: `:x:` in a name, a detail or an error message is printed as it is; no
# control character either (SafeConsole: ESC is shown as `\x1b`, never sent raw).
out = SafeConsole(highlight=False, soft_wrap=False, emoji=False)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True, emoji=False)


@dataclass
class Flags:
    """Global flags set by the app callback."""

    debug: bool = False


FLAGS = Flags()


class CliError(Exception):
    """An expected failure: printed as one line, exits with `exit_code`; `code` names it
    in a JSON error object (by default, after the exit code)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, code: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code or _CODES.get(exit_code, "failed")


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    raise CliError(message, exit_code)


def not_found(message: str) -> NoReturn:
    """Fail because an id names nothing (exit 4, every command alike)."""
    raise CliError(message, EXIT_NOT_FOUND)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def safe_url(url: str) -> str:
    """A service URL with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def _db_message(e: BaseException) -> str:
    s = get_settings()
    return (
        f"PostgreSQL is not reachable at {safe_url(s.database_url)} ({_first_line(e)}); "
        "check REFLECTION_DATABASE_URL and that the server is up (`reflection doctor`)"
    )


def _redis_message(e: BaseException) -> str:
    return (
        f"Redis is not reachable ({_first_line(e)}); check REFLECTION_REDIS_URL / "
        "REFLECTION_BROKER_URL and that Redis is up (`reflection doctor`)"
    )


def _infra_message(e: InfrastructureError) -> str:
    cause = e.__cause__
    if isinstance(cause, SQLAlchemyError):
        return _db_message(cause)
    if isinstance(cause, redis.RedisError):
        return _redis_message(cause)
    return f"a service is unavailable: {_first_line(e)}"


def _broker_message(e: BaseException) -> str:
    return (
        f"the broker is not reachable at {safe_url(get_settings().broker_url)} "
        f"({_first_line(e)}); check REFLECTION_BROKER_URL (`reflection doctor`)"
    )


def _os_message(e: OSError) -> str:
    if e.errno == errno.ELOOP:  # a file opened with O_NOFOLLOW is a link
        return f"{e.filename} is a symlink; refusing to follow it"
    return f"file system error: {e}"


# First match wins: the exception type, its message, its exit code.
_KNOWN: tuple[tuple[type[Exception], Callable[[Any], str], int], ...] = (
    (CliError, str, EXIT_FAILED),
    (EntryNotFoundError, str, EXIT_NOT_FOUND),
    (ProposalNotFoundError, str, EXIT_NOT_FOUND),
    (InfrastructureError, _infra_message, EXIT_UNAVAILABLE),
    (SQLAlchemyError, _db_message, EXIT_UNAVAILABLE),
    (redis.RedisError, _redis_message, EXIT_UNAVAILABLE),
    (kombu.exceptions.OperationalError, _broker_message, EXIT_UNAVAILABLE),
    (LockBusyError, lambda e: f"{e}; a reflection is running for this user, try again", 1),
    (RevertConflictError, str, EXIT_FAILED),
    (RetryableError, str, EXIT_FAILED),
    (UnsafePathError, str, EXIT_FAILED),
    (ReflectionError, lambda e: f"[{e.code}] {e}", EXIT_FAILED),
    (ValidationError, describe_invalid, EXIT_USAGE),
    (OSError, _os_message, EXIT_FAILED),
)


def _translate(e: Exception) -> CliError | None:
    """The one-line message, exit code and code of an expected failure, else None."""
    if isinstance(e, CliError):
        return e
    for kind, message, exit_code in _KNOWN:
        if isinstance(e, kind):
            own = e.code if isinstance(e, ReflectionError) else ""
            return CliError(message(e), exit_code, own)
    return None


P = ParamSpec("P")
R = TypeVar("R")


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:
            if FLAGS.debug:
                raise
            known = _translate(e)
            if known is None:
                message = f"{type(e).__name__}: {_first_line(e)}"
                known = CliError(message, EXIT_FAILED, "internal")
                err.print(
                    f"internal error: {message} (rerun with --debug for the traceback)",
                    markup=False,
                )
            else:
                err.print(f"error: {known}", markup=False)
            if kwargs.get("json_"):
                emit_json_error(known)
            raise typer.Exit(known.exit_code) from e

    return wrapper


def emit_json_error(error: CliError) -> None:
    """A failure of a `--json` command, for scripts: `{"error": {...}}` on stdout."""
    emit_json({"error": {"code": error.code, "message": str(error), "exit_code": error.exit_code}})


@dataclass
class Services:
    """The clients one command uses, built on first use and closed at the end."""

    settings: Settings
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @cached_property
    def engine(self) -> Engine:
        engine = make_engine(self.settings.database_url, CLI)
        self._closers.append(engine.dispose)
        return engine

    @cached_property
    def redis(self) -> redis.Redis:
        client = make_redis(self.settings.redis_url, CLI)
        self._closers.append(client.close)
        return client

    @cached_property
    def llm(self) -> LlmClient:
        client = make_llm(self.settings)
        self._closers.append(client.close)
        return client

    def deps(self) -> Deps:
        return Deps(settings=self.settings, engine=self.engine, redis=self.redis, llm=self.llm)

    def user(self, user_id: str) -> UserPaths:
        return UserPaths(self.settings.user_folder_root, user_id)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


@contextmanager
def services() -> Iterator[Services]:
    """The process's settings (read from the environment) and lazily built clients."""
    svc = Services(get_settings())
    try:
        yield svc
    finally:
        svc.close()


def emit_json(data: Any) -> None:
    """Print `data` as JSON on stdout (datetimes as ISO strings; no control, bidi or tag
    character raw, see `json_text`)."""
    typer.echo(json_text(data, default=_json_default))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def unified_diff(path: str, before: str | None, after: str | None) -> str:
    """A unified diff of one file (None = absent)."""
    lines = difflib.unified_diff(
        (before or "").splitlines(keepends=True),
        (after or "").splitlines(keepends=True),
        fromfile="/dev/null" if before is None else f"a/{path}",
        tofile="/dev/null" if after is None else f"b/{path}",
    )
    return "".join(x if x.endswith("\n") else x + "\n" for x in lines)


def print_diff(diff: str) -> None:
    """Print a unified diff coloured: additions green, removals red, hunks cyan."""
    for line in diff.splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        out.print(Text(escape_for_terminal(line, keep="\t"), style=style), soft_wrap=True)


_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """`--since`: an ISO date or datetime (UTC unless it says otherwise) or an age like
    `30m`, `24h`, `7d`, `2w`."""
    if value is None:
        return None
    m = _RELATIVE.match(value.strip())
    if m:
        delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--since {value!r}: use a date (2026-11-01), a datetime or an age (7d, 24h)", 2)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def mark(ok: bool) -> Text:
    return Text("✔", style="green") if ok else Text("✘", style="red")


def plain(value: object, *, multiline: bool = False) -> Text:
    """Data (a name, a detail, the LLM's text) as it is: Rich never reads it as markup,
    the terminal never acts on it (control, bidi and tag characters shown escaped; line
    breaks and tabs kept only in `multiline` text such as the reasoning)."""
    text = "" if value is None else str(value)
    return Text(escape_for_terminal(text, keep=MULTILINE if multiline else ""))


def labelled(label: str, value: object) -> Text:
    """`label: value`, the label in bold, the value on the same line as it is (both
    escaped as `plain` does: a label may be data too, a model's name)."""
    return Text.assemble((plain(label).plain, "bold"), ": ", plain(value))


def require_db(engine: Engine) -> None:
    """Fail early (before any file is written) when Postgres is not reachable."""
    reports.ping(engine)
