"""What one application instance holds: its settings, its engine, its job queue and its upload limits.

Nothing connects at construction. ``start()`` (the lifespan) reads the settings if
none were given, creates the folders, migrates an embedded SQLite database and
creates the engine; a request arriving without a lifespan (a bare ``TestClient``)
starts it on first use. The job queue is the one the app was given, or
``api.queue.default_queue`` of the settings, built on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.errors import TooManyRequests
from api.queue import JobQueue, default_queue
from store import migrate
from store.db import ensure_sqlite_dir, make_engine, make_sessionmaker
from store.settings import Settings, get_settings

log = logging.getLogger(__name__)

GIB = 1024**3
POSTGRES_CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class UploadLimits:
    """Refusals applied to an uploaded archive before anything is extracted.

    An archive is a bomb when its members declare at least ``bomb_ratio`` times the
    archive's size AND at least ``bomb_floor_bytes`` in total (both, so that a small,
    well-compressed dataset passes). Extraction also counts the bytes actually written and
    stops the moment they pass that limit, after checking the disk has room for them. A
    user may have ``max_concurrent_per_user`` uploads in flight at once.
    """

    max_members: int = 10_000
    bomb_ratio: float = 100.0
    bomb_floor_bytes: int = 256 * 1024**2
    max_concurrent_per_user: int = 2


class AppState:
    def __init__(self, settings: Settings | None, upload_limits: UploadLimits | None = None,
                 queue: JobQueue | None = None) -> None:
        self._settings = settings
        self.upload_limits = upload_limits or UploadLimits()
        self._queue = queue
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None
        self._lock = threading.Lock()
        self._uploads: dict[str, int] = {}

    @contextmanager
    def upload_slot(self, user_id: str) -> Iterator[None]:
        """One of the user's ``max_concurrent_per_user`` upload slots; 429 when all are taken."""
        with self._lock:
            if self._uploads.get(user_id, 0) >= self.upload_limits.max_concurrent_per_user:
                raise TooManyRequests(f"you already have {self._uploads[user_id]} uploads in progress; "
                                      f"retry when one has finished", headers={"Retry-After": "5"})
            self._uploads[user_id] = self._uploads.get(user_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._uploads[user_id] -= 1

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:  # built once the settings are known (a race builds two equal ones: harmless)
            self._queue = default_queue(self.settings)
        return self._queue

    def start(self) -> None:
        """Folders, embedded migrations and the engine (idempotent, thread-safe)."""
        with self._lock:
            if self._engine is not None:
                return
            settings = self.settings
            settings.ensure_dirs()
            url = settings.database_url
            if settings.uses_sqlite:
                ensure_sqlite_dir(url)
                migrate.upgrade(url)  # embedded mode: one command brings it all up
            kwargs = {}
            if make_url(url).get_backend_name() == "postgresql":
                kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
            self._engine = make_engine(url, **kwargs)
            self._sessionmaker = make_sessionmaker(self._engine)
            log.info("api started on %s", make_url(url).render_as_string(hide_password=True))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.start()
        assert self._engine is not None
        return self._engine

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        if self._sessionmaker is None:
            self.start()
        assert self._sessionmaker is not None
        return self._sessionmaker

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine = None
            self._sessionmaker = None
