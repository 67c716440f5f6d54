"""Settings: defaults under one home folder, environment overrides, start-up validation."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from store.settings import DEFAULT_API_KEY_PEPPER, Settings

ENV_NAMES = [
    "THRIFTY_HOME",
    "THRIFTY_DATABASE_URL",
    "THRIFTY_BROKER_URL",
    "THRIFTY_ARTIFACT_DIR",
    "THRIFTY_DATA_ROOTS",
    "THRIFTY_UPLOAD_DIR",
    "THRIFTY_API_KEY_PEPPER",
    "THRIFTY_API_KEY_PEPPER_FILE",
    "THRIFTY_DATABASE_URL_FILE",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_derive_from_home_and_create_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("THRIFTY_HOME", str(home))
    s = Settings()
    assert s.database_url == f"sqlite:///{home}/thrifty.db"
    assert s.broker_url == "filesystem://"
    assert s.artifact_dir == home / "artifacts"
    assert s.data_roots == [home / "datasets"]
    assert s.upload_dir == home / "uploads"
    assert (s.max_upload_bytes, s.lease_seconds, s.max_attempts) == (2 * 1024**3, 60, 3)
    assert s.embedded
    assert not home.exists()

    opts = s.broker_transport_options()
    assert opts["data_folder_in"] == opts["data_folder_out"] == str(home / "broker" / "queue")
    assert opts["data_folder_processed"] == str(home / "broker" / "processed")
    s.ensure_dirs()
    for folder in [s.artifact_dir, s.upload_dir, *s.data_roots, *map(Path, opts.values())]:
        assert folder.is_dir()
    s.ensure_dirs()  # idempotent


def test_home_default_expands_user() -> None:
    assert Settings().home == Path("~/.thrifty-nas").expanduser()


@pytest.mark.parametrize(
    "raw, expected",
    [("/a,/b", ["/a", "/b"]), (" /a , /b ", ["/a", "/b"]), ('["/a", "/b"]', ["/a", "/b"]), ("/only", ["/only"])],
)
def test_data_roots_from_env(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    monkeypatch.setenv("THRIFTY_DATA_ROOTS", raw)
    assert Settings().data_roots == [Path(p) for p in expected]


def test_production_refuses_default_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THRIFTY_DATABASE_URL", "postgresql+psycopg://u@db/thrifty")
    monkeypatch.setenv("THRIFTY_BROKER_URL", "redis://redis:6379/0")
    with pytest.raises(ValidationError, match="THRIFTY_API_KEY_PEPPER"):
        Settings()
    monkeypatch.setenv("THRIFTY_API_KEY_PEPPER", "a-real-secret")
    s = Settings()
    assert not s.embedded
    assert s.broker_transport_options() == {}
    assert s.api_key_pepper.get_secret_value() == "a-real-secret"
    assert "a-real-secret" not in repr(s)


def test_secrets_come_from_files_as_docker_mounts_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pepper").write_text("pepper-from-a-file\n")
    (tmp_path / "db").write_text("postgresql+psycopg://thrifty:s3cret@db:5432/thrifty")
    monkeypatch.setenv("THRIFTY_API_KEY_PEPPER_FILE", str(tmp_path / "pepper"))
    monkeypatch.setenv("THRIFTY_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("THRIFTY_BROKER_URL", "redis://redis:6379/0")
    s = Settings()
    assert s.api_key_pepper.get_secret_value() == "pepper-from-a-file"  # the trailing newline dropped
    assert s.database_url == "postgresql+psycopg://thrifty:s3cret@db:5432/thrifty" and not s.embedded
    monkeypatch.setenv("THRIFTY_API_KEY_PEPPER", "given-directly")  # a value given directly wins
    assert Settings().api_key_pepper.get_secret_value() == "given-directly"
    monkeypatch.setenv("THRIFTY_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="THRIFTY_DATABASE_URL_FILE=.*missing: cannot read it"):
        Settings()


def test_sqlite_with_redis_is_not_embedded_but_may_keep_default_pepper() -> None:
    s = Settings(broker_url="redis://127.0.0.1:6379/0")
    assert not s.embedded
    assert s.api_key_pepper.get_secret_value() == DEFAULT_API_KEY_PEPPER


def test_importing_store_has_no_side_effects(tmp_path: Path) -> None:
    home = tmp_path / "untouched"
    code = (
        "import store.settings, store.models, store.db, store.users, store.jobs, store.history, "
        "store.pagination, store.artifacts, store.migrate, store.datasets; "
        "assert store.db.get_engine.cache_info().currsize == 0"
    )
    env = {"THRIFTY_HOME": str(home), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).resolve().parents[2])
    assert not home.exists()
