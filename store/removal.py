"""Deleting what a user no longer wants: a finished job, an artefact, a dataset; rows and files.

Rows go first, in the caller's transaction (their children follow by the foreign keys'
``ON DELETE CASCADE``; genotypes stay, unlinked from the job); files are removed once the
caller has committed (``remove_files``), so a failed commit never leaves rows pointing at
nothing. Running and queued jobs must be cancelled first.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.artifacts import ArtifactStore, work_dir
from store.models import Artifact, Dataset, Job, JobStatus
from store.settings import Settings
from store.types import utcnow

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class StillInUse(ValueError):
    """The thing cannot be deleted yet; the message says what to do first, ``code`` names why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def delete_job(session: Session, job: Job, settings: Settings) -> list[Path]:
    """Delete a finished job's rows; returns the folders to remove after the commit."""
    if job.status in ACTIVE:
        raise StillInUse(f"job {job.id} is {job.status}; cancel it first (POST /v1/jobs/{job.id}/cancel)",
                         "job_active")
    session.delete(job)
    return [ArtifactStore(settings.artifact_dir).job_dir(job.id), work_dir(settings.artifact_dir, job.id)]


def delete_artifact(session: Session, artifact: Artifact, settings: Settings) -> list[Path]:
    job = session.get(Job, artifact.job_id)
    if job is not None and job.status in ACTIVE:
        raise StillInUse(f"job {job.id} is {job.status}; its artefacts can be deleted once it has finished",
                         "job_active")
    session.delete(artifact)
    return [ArtifactStore(settings.artifact_dir).path_of(artifact.location)]


def delete_dataset(session: Session, dataset: Dataset, settings: Settings) -> list[Path]:
    """Delete a dataset no job uses; an uploaded dataset's files go too (a registered path is the lab's)."""
    jobs = session.scalar(select(func.count()).select_from(Job).where(Job.dataset_id == dataset.id)) or 0
    if jobs:
        raise StillInUse(f"dataset {dataset.id} is used by {jobs} job(s); delete them first (DELETE /v1/jobs/ID)",
                         "dataset_in_use")
    session.delete(dataset)
    if not dataset.path:
        return []
    path, uploads = Path(dataset.path).resolve(), settings.upload_dir.resolve()
    if not path.is_relative_to(uploads) or path == uploads:
        return []
    return [uploads / path.relative_to(uploads).parts[0]]  # the upload's whole folder


def expire_artifacts(session: Session, settings: Settings, older_than: timedelta,
                     now: datetime | None = None) -> list[Path]:
    """Delete the artefacts of jobs that finished more than ``older_than`` ago (the jobs, their
    history and genotypes stay); returns the files to remove after the commit."""
    cutoff = (now or utcnow()) - older_than
    finished = select(Job.id).where(Job.status.not_in(ACTIVE), Job.finished_at.is_not(None), Job.finished_at < cutoff)
    rows = list(session.scalars(select(Artifact).where(Artifact.job_id.in_(finished))))
    store = ArtifactStore(settings.artifact_dir)
    files = [store.path_of(row.location) for row in rows]
    for row in rows:
        session.delete(row)
    return files


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def storage_bytes(session: Session, owner_id: str) -> int:
    """Bytes of the owner's stored artefacts."""
    total = session.scalar(select(func.coalesce(func.sum(Artifact.size), 0)).where(Artifact.owner_id == owner_id))
    return int(total or 0)
