"""The one settings object of the service (pydantic-settings, prefix ``THRIFTY_``).

Nothing set gives the embedded mode: a SQLite file and Celery's filesystem
transport under one data folder (``THRIFTY_HOME``, default ``~/.thrifty-nas``).
Production sets ``THRIFTY_DATABASE_URL`` (PostgreSQL), ``THRIFTY_BROKER_URL``
(Redis) and a real ``THRIFTY_API_KEY_PEPPER``; the default pepper is refused
outside the embedded mode when the settings are built (at start-up).

Reading the settings creates nothing on disk: call ``ensure_dirs()``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path("~/.thrifty-nas")
DEFAULT_API_KEY_PEPPER = "thrifty-nas-embedded-only-not-a-secret"
FILESYSTEM_BROKER = "filesystem://"


SECRET_FILE_SUFFIX = "_FILE"


def secrets_from_files(fields: Any, given: dict[str, Any]) -> dict[str, str]:
    """Values read from ``THRIFTY_<FIELD>_FILE`` (Docker and Kubernetes secrets mounted as files),
    for fields not given directly; the file's content, without its trailing newline."""
    found = {}
    for name in fields:
        path = os.environ.get(f"THRIFTY_{name.upper()}{SECRET_FILE_SUFFIX}")
        if path and given.get(name) in (None, ""):
            try:
                found[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"THRIFTY_{name.upper()}{SECRET_FILE_SUFFIX}={path}: cannot read it ({exc})") from None
    return found


class Settings(BaseSettings):
    """Service configuration; every field reads ``THRIFTY_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="THRIFTY_", extra="ignore")

    home: Path = DEFAULT_HOME
    database_url: str = Field(description="default: sqlite:///{home}/thrifty.db")
    broker_url: str = Field(description="default: filesystem:// (folders under {home}/broker)")
    artifact_dir: Path = Field(description="default: {home}/artifacts")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        description="server folders datasets may be registered from; env: comma-separated or a JSON list"
    )
    upload_dir: Path = Field(description="default: {home}/uploads")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    lease_seconds: int = Field(default=60, gt=0)
    retention_days: float | None = Field(default=None, gt=0, description="artefacts of jobs finished longer ago "
                                         "than this are removed (by the workers' reaper); default: kept")
    cancel_poll_seconds: float = Field(default=1.0, ge=0, le=60, description="a running job asks the database "
                                       "whether it was cancelled at most this often (0: before every step)")
    max_attempts: int = Field(default=3, ge=1)
    max_job_memory_bytes: int | None = Field(
        default=None, gt=0, description="refuse (422) a submitted job whose estimated peak memory "
        "(nas_core.memory) exceeds this; default: no limit at submit (workers still check their device)")
    api_key_pepper: SecretStr = SecretStr(DEFAULT_API_KEY_PEPPER)
    metrics_allow_ips: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="addresses or networks (CIDR) allowed to read /metrics; env: comma-separated; "
        "default: anyone who reaches the server (the embedded service listens on loopback only)")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="an MLflow tracking server (http://mlflow:5000) each job is logged to, "
        "from the workers (needs the `mlflow` extra); default: no tracking")
    mlflow_experiment: str = Field(default="thrifty-nas", min_length=1,
                                   description="the MLflow experiment jobs are logged under")

    @model_validator(mode="before")
    @classmethod
    def _derive_from_home(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data.update(secrets_from_files(cls.model_fields, data))
        home = Path(data.get("home") or DEFAULT_HOME).expanduser()
        data["home"] = home
        defaults = {
            "database_url": f"sqlite:///{home / 'thrifty.db'}",
            "broker_url": FILESYSTEM_BROKER,
            "artifact_dir": home / "artifacts",
            "data_roots": [home / "datasets"],
            "upload_dir": home / "uploads",
        }
        for key, value in defaults.items():
            if data.get(key) in (None, ""):
                data[key] = value
        return data

    @field_validator("metrics_allow_ips", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if value is not None:
            for part in value:
                ipaddress.ip_network(part, strict=False)  # ValueError names the bad entry
        return value

    def metrics_allowed(self, client_host: str | None) -> bool:
        """Whether a client at ``client_host`` may read /metrics."""
        if self.metrics_allow_ips is None:
            return True
        try:
            address = ipaddress.ip_address(client_host or "")
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.metrics_allow_ips)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("artifact_dir", "upload_dir")
    @classmethod
    def _expand_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("data_roots")
    @classmethod
    def _expand_roots(cls, value: list[Path]) -> list[Path]:
        if not value:
            raise ValueError("data_roots is empty: set THRIFTY_DATA_ROOTS to at least one folder")
        return [root.expanduser() for root in value]

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if not self.uses_sqlite and self.api_key_pepper.get_secret_value() == DEFAULT_API_KEY_PEPPER:
            raise ValueError(
                f"THRIFTY_API_KEY_PEPPER is the built-in default, which only the embedded SQLite mode "
                f"accepts; database_url is {self.database_url.split('://', 1)[0]}://...: "
                f'set THRIFTY_API_KEY_PEPPER to a long random secret, e.g. python -c "import secrets; '
                f'print(secrets.token_urlsafe(32))"'
            )
        return self

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def embedded(self) -> bool:
        """True for the single-machine mode: SQLite plus the filesystem broker."""
        return self.uses_sqlite and self.uses_filesystem_broker

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    def broker_transport_options(self) -> dict[str, Any]:
        """Celery ``broker_transport_options``: the folders of the filesystem transport, else ``{}``.

        Producers and consumers share one folder (``data_folder_in`` == ``data_folder_out``).
        """
        if not self.uses_filesystem_broker:
            return {}
        queue = str(self.broker_dir / "queue")
        return {
            "data_folder_in": queue,
            "data_folder_out": queue,
            "data_folder_processed": str(self.broker_dir / "processed"),
        }

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for another database or an in-memory one."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        raw = self.database_url[len(prefix) :].split("?", 1)[0]
        if raw in ("", ":memory:"):
            return None
        return Path(raw)

    def ensure_dirs(self) -> None:
        """Create the folders this configuration writes to (idempotent)."""
        folders = [self.home, self.artifact_dir, self.upload_dir, *self.data_roots]
        db_file = self.sqlite_path()
        if db_file is not None:
            folders.append(db_file.parent)
        for option in self.broker_transport_options().values():
            folders.append(Path(option))
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests: ``get_settings.cache_clear()``)."""
    return Settings()
