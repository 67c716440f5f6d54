"""The migrations build exactly the schema of the models, and downgrade cleanly."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from store import migrate
from store.db import make_engine
from store.models import Base


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_models_and_downgrades(empty_url: str) -> None:
    assert migrate.current_revision(empty_url) is None
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == migrate.head_revision()
    assert migrate.is_up_to_date(empty_url)
    assert _tables(empty_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert _diff(empty_url) == []

    migrate.downgrade(empty_url)
    assert _tables(empty_url) == {"alembic_version"}
    assert migrate.current_revision(empty_url) is None

    migrate.upgrade(empty_url)  # and up again
    assert _diff(empty_url) == []


def test_upgrade_creates_sqlite_parent_folder(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'thrifty.db'}"
    migrate.upgrade(url)
    assert migrate.is_up_to_date(url)


def test_single_head() -> None:
    assert migrate.head_revision() == "0001"
