"""The API's view of the job queue: a ``JobQueue`` the app is given, not module functions.

``create_app(settings, queue=...)`` takes one and keeps it on its ``AppState``; routes get it
through ``api.deps.QueueDep``. Without one, ``default_queue(settings)`` builds it on first use:

* ``CeleryQueue``: ``worker.dispatch`` (the Celery side), imported by its first call, so the API
  imports, starts and serves without Celery loaded (tests/api/test_api_imports.py,
  bench/api_startup.py).
* ``BrokerOnlyQueue``: where ``worker.dispatch`` is not installed (a web-only install): it sends
  nothing and checks the broker by itself (a filesystem broker's folders, a Redis ping).

A failed send is logged and swallowed: the job stays ``queued`` in the database, the
source of truth, and the worker's sweeper re-sends queued jobs whose message was lost.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol

from store.settings import Settings

log = logging.getLogger(__name__)

DISPATCH_MODULE = "worker.dispatch"


class JobQueue(Protocol):
    """What the API needs of the queue; no method raises."""

    def enqueue(self, job_id: str, kind: str) -> bool:
        """Send ``job_id`` (only after its row is committed); False, logged, if it could not be sent now."""
        ...

    def reachable(self, timeout: float = 1.0) -> bool:
        """True if the broker answers within ``timeout`` seconds."""
        ...

    def depth(self) -> int | None:
        """Messages waiting on the job queue, or None if unknown."""
        ...


def _not_sent(job_id: str, why: str) -> bool:
    log.warning("job %s stays queued: %s; it will be re-sent", job_id, why)
    return False


class CeleryQueue:
    """``worker.dispatch``; it reads the process settings (``store.settings.get_settings``), as workers do."""

    def enqueue(self, job_id: str, kind: str) -> bool:
        from worker import dispatch  # lazy: Celery loads with the first message, not with the API

        try:
            dispatch.enqueue_job(job_id, kind)
        except Exception as exc:  # the broker is down or refused: the row is committed, the sweeper re-sends
            return _not_sent(job_id, f"sending its message failed ({exc.__class__.__name__}: {exc})")
        return True

    def reachable(self, timeout: float = 1.0) -> bool:
        from worker import dispatch

        try:
            return bool(dispatch.broker_reachable(timeout=timeout))
        except Exception as exc:  # any failure to reach it means "not reachable"
            log.info("broker check failed: %s: %s", exc.__class__.__name__, exc)
            return False

    def depth(self) -> int | None:
        from worker import dispatch

        try:
            return dispatch.queue_depth()
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.info("queue depth unknown: %s: %s", exc.__class__.__name__, exc)
            return None


class BrokerOnlyQueue:
    """No ``worker.dispatch`` here: nothing is sent (the job stays queued), the broker is checked directly."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def enqueue(self, job_id: str, kind: str) -> bool:
        return _not_sent(job_id, f"{DISPATCH_MODULE} is not installed, no message was sent")

    def reachable(self, timeout: float = 1.0) -> bool:
        settings = self.settings
        try:
            if settings.uses_filesystem_broker:
                return all(Path(folder).is_dir() for folder in settings.broker_transport_options().values())
            if settings.broker_url.startswith(("redis://", "rediss://")):
                return _redis_ping(settings.broker_url, timeout)
        except Exception as exc:  # any failure to reach it means "not reachable"
            log.info("broker check failed: %s: %s", exc.__class__.__name__, exc)
            return False
        log.info("broker check: no way to check %s without %s", settings.broker_url.split("://")[0],
                 DISPATCH_MODULE)
        return False

    def depth(self) -> int | None:
        return None


def _redis_ping(url: str, timeout: float) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    finally:
        client.close()


def dispatch_installed() -> bool:
    """Whether ``worker.dispatch`` can be imported; found without importing it (nor Celery)."""
    try:
        return importlib.util.find_spec(DISPATCH_MODULE) is not None
    except ModuleNotFoundError:  # no ``worker`` package at all
        return False


def default_queue(settings: Settings) -> JobQueue:
    """The Celery queue where the worker package is installed, else the broker-only one."""
    return CeleryQueue() if dispatch_installed() else BrokerOnlyQueue(settings)
