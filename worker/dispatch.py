"""What the API (and the reaper) call to reach the workers. Imports neither torch nor the tasks.

The contract:

* ``enqueue_job(job_id, kind)``: send the run task, by name, with only the job id, to
  the ``gpu`` queue. Call it after the job row is committed. Raises (kombu's
  ``OperationalError``) when the broker cannot be reached after a short retry: the row
  stays queued and the reaper re-sends it later, so callers log and carry on.
* ``broker_reachable(timeout)``: True if the broker answers within ``timeout`` seconds.
* ``queue_depth()``: messages waiting on the ``gpu`` queue (Redis ``LLEN``; the
  filesystem transport counts its files), or None when it cannot be known.

The message's task id starts with the job id, so ``pending_job_ids`` can tell which
queued jobs already have a message waiting (the reaper then does not pile up copies).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from store.models import JobKind
from worker.app import RUN_JOB_TASK, Queue, get_app

log = logging.getLogger(__name__)

KIND_QUEUES = {JobKind.SEARCH: Queue.GPU, JobKind.RETRAIN: Queue.GPU}
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}


def enqueue_job(job_id: str, kind: str) -> None:
    """Send ``job_id`` to the workers of its kind's queue (after the job row is committed)."""
    try:
        queue = KIND_QUEUES[JobKind(kind)]
    except ValueError:
        raise ValueError(f"job kind {kind!r} is not one of {[k.value for k in JobKind]}") from None
    get_app().send_task(
        RUN_JOB_TASK,
        args=[job_id],
        queue=queue.value,
        routing_key=queue.value,
        task_id=f"{job_id}.{uuid.uuid4().hex[:12]}",
        retry=True,
        retry_policy=PUBLISH_RETRY,
    )
    log.info("sent %s for job %s (%s) to queue %s", RUN_JOB_TASK, job_id, kind, queue.value)


def _settings() -> Any:
    from store.settings import get_settings

    return get_settings()


def _redis_client(timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(_settings().broker_url, socket_connect_timeout=timeout, socket_timeout=timeout)


def _is_redis() -> bool:
    return _settings().broker_url.startswith(("redis://", "rediss://"))


def _filesystem_queue_files(queue: Queue) -> list[Path] | None:
    settings = _settings()
    if not settings.uses_filesystem_broker:
        return None
    folder = Path(settings.broker_transport_options()["data_folder_in"])
    suffix = f".{queue.value}.msg"
    return [folder / name for name in os.listdir(folder) if name.endswith(suffix)]


def broker_reachable(timeout: float = 1.0) -> bool:
    """True if the broker answers within ``timeout`` seconds (never raises)."""
    settings = _settings()
    try:
        if settings.uses_filesystem_broker:
            folders = [Path(p) for p in settings.broker_transport_options().values()]
            return all(p.is_dir() and os.access(p, os.W_OK) for p in folders)
        if _is_redis():
            client = _redis_client(timeout)
            try:
                return bool(client.ping())
            finally:
                client.close()
        with get_app().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            return True
    except Exception as exc:  # any failure to reach it means "not reachable"
        log.info("broker not reachable: %s: %s", exc.__class__.__name__, exc)
        return False


def queue_depth(queue: Queue = Queue.GPU) -> int | None:
    """Messages waiting on ``queue``, or None when unknown (broker down, unsupported transport)."""
    try:
        if _is_redis():
            client = _redis_client(1.0)
            try:
                return int(client.llen(queue.value))
            finally:
                client.close()
        files = _filesystem_queue_files(queue)
        return None if files is None else len(files)
    except Exception as exc:  # a metrics scrape must not fail because the broker is down
        log.info("queue depth unknown: %s: %s", exc.__class__.__name__, exc)
        return None


def _job_id_of(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
        task_id = message["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(task_id).split(".", 1)[0]


def pending_job_ids(queue: Queue = Queue.GPU) -> set[str] | None:
    """Ids of jobs with a message waiting on ``queue`` (not yet taken by a worker), or None if unknown."""
    try:
        if _is_redis():
            client = _redis_client(2.0)
            try:
                raws = client.lrange(queue.value, 0, -1)
            finally:
                client.close()
        else:
            files = _filesystem_queue_files(queue)
            if files is None:
                return None
            raws = []
            for path in files:
                try:
                    raws.append(path.read_bytes())
                except FileNotFoundError:  # taken by a worker meanwhile
                    continue
    except Exception as exc:  # unknown: the caller re-sends, which is safe
        log.info("pending messages unknown: %s: %s", exc.__class__.__name__, exc)
        return None
    return {job_id for raw in raws if (job_id := _job_id_of(raw))}
