"""Fixtures for the dashboard tests: those of tests/api (real PostgreSQL schema, settings, users, rows)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from store.settings import Settings
from store.users import create_user_with_key
from tests.api import conftest as api_fixtures
from tests.web.support import SeededJob, seed_finished_search

PEPPER = api_fixtures.PEPPER
# The API tests' fixtures, shared by name (real PostgreSQL schema, settings, dataset and job rows).
_isolated_environment = api_fixtures._isolated_environment
pg_url, pg_engine, factory = api_fixtures.pg_url, api_fixtures.pg_engine, api_fixtures.factory
data_root, settings, make_client = api_fixtures.data_root, api_fixtures.settings, api_fixtures.make_client
add_dataset, add_job, job_queue = api_fixtures.add_dataset, api_fixtures.add_job, api_fixtures.job_queue


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A client that does not follow redirects (the tests look at them)."""
    client = make_client()
    client.follow_redirects = False
    return client


@pytest.fixture
def make_person(factory: sessionmaker[Session]) -> Callable[[str], tuple[str, str]]:
    """``make_person(name)`` -> (user id, plaintext API key)."""

    def make(name: str) -> tuple[str, str]:
        with factory() as session:
            user, key = create_user_with_key(session, name, pepper=PEPPER)
            session.commit()
            return user.id, key

    return make


@pytest.fixture
def alice(make_person: Callable[[str], tuple[str, str]]) -> tuple[str, str]:
    return make_person("alice")


@pytest.fixture
def bob(make_person: Callable[[str], tuple[str, str]]) -> tuple[str, str]:
    return make_person("bob")


@pytest.fixture
def finished(factory: sessionmaker[Session], settings: Settings, alice: tuple[str, str],
             add_dataset: Callable[..., str]) -> SeededJob:
    """Alice's succeeded search on a SYNTHETIC dataset, with history, Dice per case and two files."""
    report = {"ok": True, "format": "nnunet", "name": "phantom", "num_cases": 3, "synthetic": True,
              "labels": {"0": "background", "1": "organ_1", "2": "organ_2"}, "modality": "CT", "issues": []}
    dataset_id = add_dataset(alice[0], synthetic=True, report=report, modality="CT")
    return seed_finished_search(factory, settings.artifact_dir, alice[0], dataset_id)
