"""A job's own log lines, kept in the artefact store while it runs (``<job_id>/job.log``).

Records of the thread that runs the job (the engines', the runner's) are appended to the
file, so a resumed attempt continues it; the API serves it while the job runs
(``GET /v1/jobs/{id}/logs``) and it is registered as the job's ``log`` artefact when the
attempt ends, whatever its outcome.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from store.artifacts import ArtifactStore, register_artifact
from store.db import session_scope
from store.joblogs import LOG_NAME, log_path
from store.models import ArtifactKind, Job

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def job_log(store: ArtifactStore, job_id: str, level: int = logging.INFO) -> Iterator[Path]:
    """Append this thread's log records to the job's log file while inside."""
    path = log_path(store, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    root = logging.getLogger()
    previous = root.level
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def register_log(store: ArtifactStore, sessions, job_id: str) -> None:  # noqa: ANN001
    """Record the log file as the job's ``log`` artefact (size and sha256 as it now stands)."""
    path = log_path(store, job_id)
    if not path.is_file():
        return
    stored = store.put_file(job_id, LOG_NAME, path, ArtifactKind.LOG)
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        if job is not None:
            register_artifact(session, job_id=job_id, owner_id=job.owner_id, name=LOG_NAME, kind=ArtifactKind.LOG,
                              stored=stored)
