"""Run the Alembic migrations in-process (``thrifty-nas`` migrates on start-up).

The migrations travel inside this package (``store/migrations``, package data), so this
works from any working directory, without alembic.ini and from a non-editable install.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from store.db import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for ``url`` using this project's migrations folder."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def _resolve(url: str | None) -> str:
    if url is not None:
        return url
    from store.settings import get_settings

    return get_settings().database_url


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` (default: the settings') up to ``revision`` (default: newest).

    Safe to call from several processes at once on PostgreSQL (an advisory lock serialises them).
    """
    command.upgrade(alembic_config(_resolve(url)), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Take the database at ``url`` (default: the settings') down to ``revision`` (default: empty)."""
    command.downgrade(alembic_config(_resolve(url)), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision in the migrations folder."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def is_up_to_date(url: str) -> bool:
    return current_revision(url) == head_revision()
