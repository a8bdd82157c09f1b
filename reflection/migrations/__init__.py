"""The worker's alembic migrations, shipped inside the package (`reflection migrate`).

The scripts (`env.py`, `versions/`) sit beside this file, so an installed wheel migrates
from any directory; `alembic upgrade head` from a checkout reads the same folder through
the repository's `alembic.ini`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

SCRIPT_DIR = Path(__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An alembic configuration for the shipped scripts; `url` overrides
    REFLECTION_DATABASE_URL (read by `env.py`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_DIR))
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def head_revision() -> str | None:
    """The newest revision the shipped scripts know."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database behind `engine` is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at `url` (default: REFLECTION_DATABASE_URL) to `revision`."""
    command.upgrade(alembic_config(url), revision)
