"""The API's view of the job queue: a thin adapter over ``worker.dispatch``.

``worker.dispatch`` (the Celery side) is imported lazily, on first use, so the API
imports, serves and tests without Celery loaded. The contract:

* ``enqueue_job(job_id, kind)``: send the job id; called only after the job row is committed.
* ``broker_reachable(timeout)``: True if the broker answers.
* ``queue_depth()``: messages waiting, or None if unknown.

A failed send is logged and swallowed: the job stays ``queued`` in the database, the
source of truth, and the worker's sweeper re-sends queued jobs whose message was lost.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

from store.settings import Settings

log = logging.getLogger(__name__)

DISPATCH_MODULE = "worker.dispatch"


def _dispatch() -> ModuleType | None:
    """``worker.dispatch``, or None while it is not installed (the API then degrades, never fails)."""
    try:
        return importlib.import_module(DISPATCH_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("worker", DISPATCH_MODULE):
            raise  # worker.dispatch exists but one of its own imports is missing: a real bug
        return None


def dispatch_available() -> bool:
    return _dispatch() is not None


def enqueue_job(job_id: str, kind: str) -> bool:
    """Send ``job_id`` to the workers; False (logged) if it could not be sent now."""
    dispatch = _dispatch()
    if dispatch is None:
        log.warning("job %s stays queued: %s is not installed, no message was sent", job_id, DISPATCH_MODULE)
        return False
    try:
        dispatch.enqueue_job(job_id, kind)
    except Exception as exc:  # the broker is down or refused: the row is committed, the sweeper re-sends
        log.warning("job %s stays queued: sending its message failed (%s: %s); it will be re-sent",
                    job_id, exc.__class__.__name__, exc)
        return False
    return True


def _redis_ping(url: str, timeout: float) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    finally:
        client.close()


def broker_reachable(settings: Settings, timeout: float = 1.0) -> bool:
    """True if the broker answers within ``timeout`` seconds."""
    dispatch = _dispatch()
    try:
        if dispatch is not None:
            return bool(dispatch.broker_reachable(timeout=timeout))
        if settings.uses_filesystem_broker:
            return all(Path(folder).is_dir() for folder in settings.broker_transport_options().values())
        if settings.broker_url.startswith(("redis://", "rediss://")):
            return _redis_ping(settings.broker_url, timeout)
    except Exception as exc:  # any failure to reach it means "not reachable"
        log.info("broker check failed: %s: %s", exc.__class__.__name__, exc)
        return False
    log.info("broker check: no way to check %s without %s", settings.broker_url.split("://")[0], DISPATCH_MODULE)
    return False


def queue_depth() -> int | None:
    """Messages waiting on the job queue, or None if unknown (no dispatch module, broker down)."""
    dispatch = _dispatch()
    if dispatch is None:
        return None
    try:
        return dispatch.queue_depth()
    except Exception as exc:  # a scrape must not fail because the broker is down
        log.info("queue depth unknown: %s: %s", exc.__class__.__name__, exc)
        return None
