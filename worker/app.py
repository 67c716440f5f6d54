"""The Celery app, built from the settings on first use (nothing connects at import).

``celery -A worker.app worker`` finds ``app`` through the module ``__getattr__``
below, which builds it once. The broker is ``THRIFTY_BROKER_URL`` (Redis in
production); the embedded default is Celery's filesystem transport in folders under
``THRIFTY_HOME/broker``. Messages carry only a job id (JSON); no result backend is
used: the database is the source of truth for a job's state.

Every task is declared with :func:`task`, which sets its name (``thrifty.<name>``),
its queue (a :class:`Queue`) and the bookkeeping shared by all tasks (late acks,
no stored result, start/finish logging).

This module is the bottom of ``worker``: ``dispatch`` (what the API and the reaper send with)
imports it, and it imports no other ``worker`` module. The worker process's hooks (start the
reaper, hand the running job back at shutdown) live in ``worker.tasks``, which every worker
process imports (``imports`` below) before it is ready.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from typing import Any

from celery import Celery, Task, shared_task
from kombu import Exchange
from kombu import Queue as KombuQueue

from store.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_PREFIX = "thrifty."
RUN_JOB_TASK = f"{TASK_PREFIX}run_job"
REAP_TASK = f"{TASK_PREFIX}reap"
REDIS_CONNECT_TIMEOUT_S = 3


class Queue(StrEnum):
    """The queues, in one place. ``gpu``: searches and retrains, one job per GPU worker.
    ``control``: short housekeeping tasks (a reaper sweep on demand)."""

    GPU = "gpu"
    CONTROL = "control"


def transport_options(settings: Settings) -> dict[str, Any]:
    """``broker_transport_options``: the filesystem transport's folders (its control folder
    too, which kombu would otherwise create in the current directory); Redis: a connect timeout."""
    options = dict(settings.broker_transport_options())
    if settings.uses_filesystem_broker:
        options["control_folder"] = str(settings.broker_dir / "control")
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        options["socket_connect_timeout"] = REDIS_CONNECT_TIMEOUT_S  # a down broker fails a send fast
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings``: late acks, prefetch 1, JSON, no results."""
    filesystem = settings.uses_filesystem_broker
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_queues": [KombuQueue(q.value, Exchange(q.value, type="direct"), routing_key=q.value) for q in Queue],
        "task_default_queue": Queue.GPU.value,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
        # Flower reads task events and remote control; the filesystem transport has no fanout for them.
        "worker_send_task_events": not filesystem,
        "task_send_sent_event": not filesystem,
        "worker_enable_remote_control": not filesystem,
        "imports": ("worker.tasks",),
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (default: the process-wide settings)."""
    settings = settings or get_settings()
    app = Celery("thrifty_nas", set_as_current=True)
    app.config_from_object(celery_config(settings))
    return app


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The process-wide app (tests: ``get_app.cache_clear()`` after changing the settings)."""
    return create_app()


def __getattr__(name: str) -> Any:  # PEP 562: ``worker.app.app`` is built on first access
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ThriftyTask(Task):
    """Bookkeeping shared by every task: late acks, no result, a log line at start and end."""

    abstract = True
    acks_late = True
    ignore_result = True
    typing = True

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        self._t0 = time.monotonic()
        log.info("task %s[%s] started: args=%s", self.name, task_id, args)

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        elapsed = time.monotonic() - getattr(self, "_t0", time.monotonic())
        log.info("task %s[%s] %s in %.1fs: %s", self.name, task_id, status.lower(), elapsed, retval)


def task(name: str, queue: Queue, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Declare a project task: ``@task("run_job", Queue.GPU)`` -> ``thrifty.run_job`` on ``gpu``."""

    def decorate(func: Callable[..., Any]) -> Any:
        return shared_task(name=f"{TASK_PREFIX}{name}", queue=queue.value, base=ThriftyTask, **options)(func)

    return decorate


# -- the parent watch (started with the reaper by ``worker.tasks``' ready hook) ---------------

PARENT_ENV = "THRIFTY_PARENT_PID"


def watch_parent(interval_s: float = 1.0) -> threading.Thread | None:
    """Stop this worker (warm shutdown, as SIGTERM) once the process that started it is gone.

    ``thrifty-nas up`` starts its worker in a session of its own (so a terminal's Ctrl-C
    reaches only ``up``) and names itself in ``THRIFTY_PARENT_PID``: if ``up`` dies without
    stopping it (SIGKILL, a crash), the orphan must not keep consuming the home's queue.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdecimal():
        return None
    pid = int(parent)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != pid:  # reparented: the parent is gone
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="thrifty-parent-watch", daemon=True)
    thread.start()
    return thread
