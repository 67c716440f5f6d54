"""``/v1/jobs``: list, show and cancel jobs; their alpha history and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.body import JsonBodyRoute
from api.deps import CurrentUser, OwnedJob, SessionDep, SettingsDep, cursor_query
from api.errors import Conflict, error_responses
from api.presenters import job_out
from api.routes import API_PREFIX
from api.schemas import AlphaHistory, JobLogOut, JobOut, JobPage, MetricsOut
from api.services.deletion import delete_and_remove
from api.services.history import MAX_EPOCH, edge_labels, epoch_cursor, group_by_epoch
from store import removal
from store.artifacts import ArtifactStore
from store.history import list_alpha_snapshots, list_case_scores, list_epoch_metrics
from store.joblogs import log_path, read_lines
from store.jobs import request_cancel
from store.models import TERMINAL_STATUSES, Job, JobKind, JobStatus
from store.pagination import MAX_LIMIT, list_jobs

router = APIRouter(prefix=f"{API_PREFIX}/jobs", tags=["jobs"], route_class=JsonBodyRoute)


@router.get("", response_model=JobPage, responses=error_responses(400))
def list_my_jobs(
    user: CurrentUser,
    session: SessionDep,
    kind: JobKind | None = None,
    status: Annotated[list[JobStatus] | None, Query(description="repeat for several")] = None,
    cursor: Annotated[str | None, cursor_query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> JobPage:
    """Your jobs, newest first, optionally of one kind and some statuses."""
    page = list_jobs(session, user.id, kind=kind, status=status or None, cursor=cursor, limit=limit)
    return JobPage(items=[job_out(j) for j in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def get_job(job: OwnedJob) -> JobOut:
    """Status, progress, epoch, ETA, latest metrics and error of one job."""
    return job_out(job)


@router.delete("/{job_id}", status_code=204, responses=error_responses(404, 409))
def delete_job(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a finished job: its rows, history, artefacts and files (its genotypes stay). 409 while
    it is queued or running: cancel it first. Afterwards the job is 404."""
    return delete_and_remove(session, lambda: removal.delete_job(session, job, settings))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses={202: {"model": JobOut, "description": "running: cancel requested, it stops within a step"},
               **error_responses(404, 409)},
)
def cancel_job(job: OwnedJob, response: Response, session: SessionDep, user: CurrentUser) -> JobOut:
    """Cancel a job: a queued one at once (200), a running one within one training step (202)."""
    if JobStatus(job.status) in TERMINAL_STATUSES:
        raise _finished(job)
    cancelled = request_cancel(session, job.id, owner_id=user.id)
    session.commit()
    assert cancelled is not None
    if cancelled.status == JobStatus.RUNNING.value:
        response.status_code = 202
    elif cancelled.status != JobStatus.CANCELLED.value:
        raise _finished(cancelled)  # it finished between the two reads
    return job_out(cancelled)


def _finished(job: Job) -> Conflict:
    return Conflict(f"job {job.id!r} is already {job.status}; only queued or running jobs can be cancelled",
                    code="job_finished", details={"status": job.status})


def _search_only(job: Job, what: str) -> None:
    if job.kind != JobKind.SEARCH.value:
        raise Conflict(f"job {job.id!r} is a {job.kind} job: {what} exist only for search jobs",
                       code="not_a_search")


@router.get("/{job_id}/alphas", response_model=AlphaHistory, responses=error_responses(400, 404, 409))
def alpha_history(
    job: OwnedJob,
    session: SessionDep,
    after_epoch: Annotated[int | None, Query(ge=-1, le=MAX_EPOCH, description="epochs after this one")] = None,
    cursor: Annotated[str | None, cursor_query("next_cursor of the previous page (same as after_epoch)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="epochs per page")] = 50,
) -> AlphaHistory:
    """Architecture weights per epoch and cell type, with each alphas row's edge and op names."""
    _search_only(job, "alpha histories")
    if cursor is not None:
        after_epoch = epoch_cursor(cursor)
    rows = list_alpha_snapshots(session, job.id, after_epoch=after_epoch, limit=limit + 1)
    epochs = group_by_epoch(rows)
    more = len(epochs) > limit
    epochs = epochs[:limit]
    next_epoch = epochs[-1]["epoch"] if more else None
    return AlphaHistory.model_validate({
        "job_id": job.id,
        "edges": edge_labels(job.config),
        "items": epochs,
        "next_cursor": None if next_epoch is None else str(next_epoch),
        "next_after_epoch": next_epoch,
    })


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=error_responses(404))
def job_metrics(job: OwnedJob, session: SessionDep) -> MetricsOut:
    """Metrics per epoch and split (train, val, arch), and per-case Dice of the evaluation."""
    epochs: dict[int, dict[str, dict]] = {}
    for row in list_epoch_metrics(session, job.id):
        epochs.setdefault(row.epoch, {})[row.split] = row.metrics
    return MetricsOut.model_validate({
        "job_id": job.id,
        "latest": job.latest_metrics,
        "epochs": [{"epoch": e, "splits": s} for e, s in epochs.items()],
        "cases": list_case_scores(session, job.id),
        "test": (job.latest_metrics or {}).get("test"),
    }, from_attributes=True)


@router.get("/{job_id}/logs", response_model=JobLogOut, responses=error_responses(404))
def job_logs(
    job: OwnedJob,
    settings: SettingsDep,
    since: Annotated[int, Query(ge=0, le=10**9, description="skip the first N lines (next_since of the last call)")] = 0,
    tail: Annotated[int | None, Query(ge=1, le=100_000, description="only the last N lines")] = None,
) -> JobLogOut:
    """The job's log lines (also while it runs); poll with ``since=next_since`` to follow it."""
    lines, total = read_lines(log_path(ArtifactStore(settings.artifact_dir), job.id), since, tail)
    return JobLogOut(job_id=job.id, status=job.status, lines=lines, next_since=total)
