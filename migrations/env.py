"""Alembic environment: the URL is the one the caller set, else DATABASE_URL / the bot's default."""

from __future__ import annotations

import contextlib
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config

if (
    config.config_file_name is not None
    and config.attributes.get("configure_logging", True)
    and not config.get_main_option("sqlalchemy.url")  # command line use: log like alembic does
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from bot.settings import Settings  # DATA_DIR, .env

    return Settings().resolved_database_url()


def target_metadata():
    import bot.follow_store  # noqa: F401 - their tables are in Base.metadata once imported
    import bot.invites  # noqa: F401
    import bot.lookups  # noqa: F401
    from bot.db import Base

    return Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata(), literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


# Any constant: the key of the PostgreSQL advisory lock that one migration run at a time holds.
MIGRATION_LOCK_KEY = 0x66616365  # "face"


def run_migrations_online() -> None:
    """Migrate, one process at a time: bot replicas starting together on a fresh database would both create tables.

    PostgreSQL: a session advisory lock on the migration's own connection (released when it closes, also if the
    process dies). SQLite: a file lock beside the database file. The process that waited then finds the schema at
    head and has nothing to do.
    """
    section = config.get_section(config.config_ini_section, {})
    url = section["sqlalchemy.url"] = database_url()
    file_lock = contextlib.nullcontext()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        from pathlib import Path

        from filelock import FileLock

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        file_lock = FileLock(f"{path}.migrate.lock")
    connectable = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with file_lock, connectable.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()  # the lock is the session's; Alembic opens its own transaction next
        context.configure(connection=connection, target_metadata=target_metadata(), render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
