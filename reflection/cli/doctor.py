"""`reflection doctor`: is every service and folder the worker needs ready?"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import openai
import typer
from rich.table import Table
from rich.text import Text

from reflection import migrations
from reflection.cli.common import (
    EXIT_FAILED,
    JsonOpt,
    emit_json,
    handled,
    mark,
    out,
    plain,
    safe_url,
)
from reflection.clients import DOCTOR, make_engine, make_openai, make_redis
from reflection.constants import QUEUE_NAME
from reflection.pieces import PieceError, load_piece_file, parse_piece_yaml, validate_piece
from reflection.producer import make_producer
from reflection.settings import Settings, get_settings
from reflection.storage import reports


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table; `fix` says what to do when it is red, or when it
    is a `warning` (yellow: worth a look, not a failure)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


PING_SECONDS = 1.0  # how long `doctor` waits for workers to answer its ping


def _short(e: BaseException) -> str:
    text_ = str(e).strip()
    return (text_.splitlines()[0] if text_ else type(e).__name__)[:200]


def check_broker(s: Settings) -> Check:
    name, url = "broker", safe_url(s.broker_url)
    fix = "start it, or set REFLECTION_BROKER_URL"
    try:
        if s.broker_url.startswith(("redis://", "rediss://")):
            client = make_redis(s.broker_url, DOCTOR)
            try:
                waiting = client.llen(QUEUE_NAME)
            finally:
                client.close()
            return Check(name, True, f"{url}: {waiting} task(s) waiting in `{QUEUE_NAME}`")
        app = make_producer(s.broker_url)
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            if conn.transport.driver_type == "amqp":
                return Check(name, True, f"{url}: {_amqp_waiting(conn)}")
        return Check(name, True, url)
    except Exception as e:
        return Check(name, False, f"{url}: {_short(e)}", fix)


def _amqp_waiting(conn: Any) -> str:
    """The depth of the reflection queue on RabbitMQ (a passive declare creates nothing)."""
    try:
        declared = conn.default_channel.queue_declare(QUEUE_NAME, passive=True)
    except conn.channel_errors:  # 404: not declared yet
        return f"no `{QUEUE_NAME}` queue yet (a worker declares it when it starts)"
    return f"{declared.message_count} task(s) waiting in `{QUEUE_NAME}`"


def check_lock_redis(s: Settings) -> Check:
    url = safe_url(s.redis_url)
    try:
        client = make_redis(s.redis_url, DOCTOR)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as e:
        return Check(
            "lock redis", False, f"{url}: {_short(e)}", "start it, or set REFLECTION_REDIS_URL"
        )
    return Check("lock redis", True, url)


def check_postgres(s: Settings) -> Check:
    url = safe_url(s.database_url)
    engine = make_engine(s.database_url, DOCTOR)
    try:
        found = reports.schema(engine)
    except Exception as e:
        return Check(
            "postgres", False, f"{url}: {_short(e)}", "start it, or set REFLECTION_DATABASE_URL"
        )
    finally:
        engine.dispose()
    head = migrations.head_revision()
    if found.revision != head:
        return Check(
            "postgres",
            False,
            f"{url}: migrations at {found.revision}, head is {head}",
            "run `reflection migrate`",
        )
    if not found.has_jobs:
        return Check(
            "postgres",
            False,
            f"{url}: no `jobs` table",
            "point REFLECTION_DATABASE_URL at the platform's database (sql/jobs.sql for tests)",
        )
    return Check("postgres", True, f"{url}: migrations at head ({head}), jobs table present")


def check_llm(s: Settings) -> Check:
    client = make_openai(s, DOCTOR)
    where = safe_url(s.llm_endpoint)
    try:
        models = [m.id for m in client.models.list()]
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        return Check(
            "llm",
            False,
            f"{where}: the key was refused (HTTP {e.status_code})",
            "check REFLECTION_LLM_API_KEY",
        )
    except openai.APIConnectionError as e:
        return Check(
            "llm",
            False,
            f"{where}: unreachable ({_short(e)})",
            "start the gateway, or set REFLECTION_LLM_ENDPOINT",
        )
    except openai.APIError as e:
        return Check(
            "llm",
            False,
            f"{where}: GET /models failed ({_short(e)})",
            "check REFLECTION_LLM_ENDPOINT points at an OpenAI-compatible /v1",
        )
    finally:
        client.close()
    if s.llm_model not in models:
        listed = ", ".join(models[:8]) or "none"
        return Check(
            "llm",
            False,
            f"{where}: model {s.llm_model!r} not served (serves: {listed})",
            "set REFLECTION_LLM_MODEL to a served model",
        )
    return Check("llm", True, f"{where}: key accepted, model {s.llm_model!r} served")


def check_user_folder(s: Settings) -> Check:
    root = s.user_folder_root
    if not root.is_dir():
        return Check(
            "user folder",
            False,
            f"{root}: missing",
            f"create it (mkdir -p {root}) or set REFLECTION_USER_FOLDER_ROOT",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-") as f:
            f.write(b"ok")
            f.flush()
    except OSError as e:
        return Check(
            "user folder",
            False,
            f"{root}: not writable ({e.strerror})",
            "give the worker's user write access to it",
        )
    free = shutil.disk_usage(root).free // (1024 * 1024)
    return Check("user folder", True, f"{root}: writable, {free} MiB free")


def check_pieces(s: Settings) -> Check:
    folder = s.pieces_dir
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        return Check(
            "pieces",
            False,
            f"{folder}: no *.yaml pieces",
            "set REFLECTION_PIECES_DIR to a folder of pieces, or unset it for the built-in ones",
        )
    bad = []
    for path in files:
        try:
            validate_piece(parse_piece_yaml(load_piece_file(path)), expected_name=path.stem)
        except (PieceError, OSError) as e:
            bad.append(f"{path.name}: {_short(e)}")
    if bad:
        return Check(
            "pieces", False, f"{folder}: " + "; ".join(bad[:3]), "fix or remove those files"
        )
    return Check("pieces", True, f"{folder}: {len(files)} valid piece(s)")


def check_workers(s: Settings) -> Check:
    """Which workers answer a ping (`celery inspect ping`) through the broker. None is a
    warning, not a failure: doctor also runs before the first worker starts."""
    app = make_producer(s.broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        replies = app.control.ping(timeout=PING_SECONDS) or []
    except Exception as e:
        return Check("workers", False, f"cannot ask: {_short(e)}", "see the broker line")
    finally:
        app.close()
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check(
            "workers",
            True,
            f"none answered a ping within {PING_SECONDS:g} s",
            "start one: celery -A tasks worker -Q reflection (README, Running it)",
            warning=True,
        )
    return Check("workers", True, f"{len(names)} online: {', '.join(names)}")


CHECKS: tuple[Callable[[Settings], Check], ...] = (
    check_broker,
    check_lock_redis,
    check_postgres,
    check_llm,
    check_user_folder,
    check_pieces,
    check_workers,
)


@handled
def doctor(json_: JsonOpt = False) -> None:
    """Check every service and folder the worker needs, and which workers are online.

    Broker, lock Redis, Postgres (migrations at head), the LLM endpoint (key, model),
    the user folder (writable), the pieces, and the workers that answer a ping (none is
    a yellow line). Exit 1 when anything is red."""
    s = get_settings()
    results = [check(s) for check in CHECKS]
    if json_:
        emit_json({"ok": all(r.ok for r in results), "checks": [asdict(r) for r in results]})
    else:
        table = Table(title="reflection doctor")
        for col in ("", "check", "detail", "what to do"):
            table.add_column(col)
        for r in results:
            sign = Text("!", style="yellow") if r.warning else mark(r.ok)
            table.add_row(sign, r.name, plain(r.detail), plain(r.fix))
        out.print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_FAILED)
