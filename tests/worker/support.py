"""Helpers shared by the worker tests (imported by their conftest and test modules)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from store.datasets import create_dataset
from store.db import session_scope
from store.jobs import create_job
from store.settings import Settings
from store.users import create_user_with_key

PG_URL = os.environ.get("THRIFTY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PEPPER = "worker-test-pepper"
TINY_SEARCH = {"epochs": 2, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2,
               "depth": 3}
TINY_RETRAIN = {"epochs": 2, "image_size": 32, "batch_size": 2}


def require_postgres() -> None:
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no server here"
        reason = f"PostgreSQL at {make_url(PG_URL).render_as_string()} is unreachable: {exc.__class__.__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
        pytest.skip(reason)
    finally:
        engine.dispose()


def make_settings(pg_url: str, home: Path, lease_seconds: int = 30) -> Settings:
    return Settings(home=home, database_url=pg_url, api_key_pepper=PEPPER, artifact_dir=home / "artifacts",
                    data_roots=[home / "data"], lease_seconds=lease_seconds)


class Owner(NamedTuple):
    user_id: str
    dataset_id: str


def make_owner(sessions: sessionmaker[Session], data_path: Path) -> Owner:
    """A committed user (unique name) with one dataset at ``data_path``."""
    with session_scope(sessions) as session:
        user, _ = create_user_with_key(session, f"lab-{uuid.uuid4().hex[:8]}", pepper=PEPPER)
        dataset = create_dataset(session, owner_id=user.id, name="phantom", path=str(data_path), format="nnunet",
                                 num_cases=6, num_classes=3, synthetic=True)
        return Owner(user.id, dataset.id)


def submit(sessions: sessionmaker[Session], owner: Owner, kind: str, config: dict[str, Any],
           architecture: dict[str, Any] | None = None, dataset_id: str | None = None) -> str:
    """Create a queued job (committed) and return its id."""
    with session_scope(sessions) as session:
        created = create_job(session, owner_id=owner.user_id, kind=kind, dataset_id=dataset_id or owner.dataset_id,
                             config=config, epochs=config.get("epochs", 0), architecture=architecture)
        return created.job.id
