"""Alembic environment: migrates the worker's own tables in REFLECTION_DATABASE_URL."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from reflection.clients import make_engine
from reflection.settings import get_settings
from reflection.storage import metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate only our tables; `jobs` and anything else belong to the platform."""
    return type_ != "table" or name in metadata.tables


def _url() -> str:
    return config.attributes.get("url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=metadata, literal_binds=True, include_name=include_name
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=metadata, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
