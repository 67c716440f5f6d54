"""``/`` (your jobs) and ``/jobs/{id}`` (one job), with its cancel and retrain forms.

The forms call the same domain code as ``POST /v1/jobs/{id}/cancel`` and ``POST /v1/retrains``;
another user's job is a 404 page, as in the API.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from api.deps import QueueDep, SessionDep, SettingsDep
from api.errors import Conflict, NotFound
from api.schemas import ArchitectureIn
from api.services.configs import RetrainConfigIn, retrain_config
from api.services.submit import ready_dataset, resolve_architecture, submit
from api.web import views
from api.web.render import WebRoute, page
from api.web.session import FormUser, WebUser
from nas_core.config import RetrainConfig
from store.artifacts import list_artifacts
from store.datasets import get_dataset, list_datasets
from store.history import list_case_scores
from store.jobs import get_job, request_cancel
from store.models import TERMINAL_STATUSES, DatasetStatus, Job, JobKind, JobStatus, User
from store.pagination import list_jobs

router = APIRouter(route_class=WebRoute)

PAGE_SIZE = 25
WebJobId = Annotated[str, Path(min_length=1, max_length=64)]


def owned_job(session: Session, user: User, job_id: str) -> Job:
    job = get_job(session, job_id, owner_id=user.id)
    if job is None:
        raise NotFound.of("job", job_id, "; it does not exist or is not yours")
    return job


@router.get("/")
def job_list(request: Request, user: WebUser, session: SessionDep, cursor: str | None = None) -> Response:
    jobs = list_jobs(session, user.id, cursor=cursor, limit=PAGE_SIZE)
    datasets = {d.id: d for d in list_datasets(session, user.id)}
    live = any(views.is_live(job) for job in jobs.items)
    return page(request, "jobs.html", jobs=jobs.items, next_cursor=jobs.next_cursor, datasets=datasets,
                refresh=live, first_page=cursor is None)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: WebJobId, user: WebUser, session: SessionDep) -> Response:
    job = owned_job(session, user, job_id)
    genotype = views.job_genotype(session, job)
    retrain = views.can_retrain(job, genotype)
    ready = [d for d in list_datasets(session, user.id) if d.status == DatasetStatus.READY.value] if retrain else []
    return page(
        request, "job.html",
        job=job,
        dataset=get_dataset(session, job.dataset_id, owner_id=user.id),
        genotype=genotype,
        architecture=views.architecture_text(job) if job.kind == JobKind.RETRAIN.value else None,
        metrics=views.flat_metrics(job.latest_metrics),
        plots=views.job_plots(session, job, genotype),
        dice=views.dice_table(list_case_scores(session, job.id)),
        artifacts=list_artifacts(session, job.id),
        refresh=views.is_live(job),
        can_cancel=views.is_live(job),
        can_retrain=retrain,
        ready_datasets=ready,
        default_epochs=RetrainConfig.epochs,
        submit_token=secrets.token_urlsafe(16),
    )


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: WebJobId, user: FormUser, session: SessionDep) -> Response:
    """A queued job is cancelled at once; a running one stops within a training step."""
    job = owned_job(session, user, job_id)
    if JobStatus(job.status) in TERMINAL_STATUSES:
        raise Conflict(f"job {job.id} is already {job.status}; only queued or running jobs can be cancelled")
    request_cancel(session, job.id, owner_id=user.id)
    session.commit()
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/retrain")
def retrain(
    job_id: WebJobId,
    user: FormUser,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    dataset_id: Annotated[str, Form(min_length=1, max_length=64)],
    epochs: Annotated[int, Form(ge=1)],
    submit_token: Annotated[str, Form(min_length=8, max_length=64)],
) -> Response:
    """Retrain the search's final genotype from scratch (as ``POST /v1/retrains``), then show the new job."""
    job = owned_job(session, user, job_id)
    dataset = ready_dataset(session, user.id, dataset_id)
    config = retrain_config(RetrainConfigIn(epochs=epochs))
    architecture = resolve_architecture(session, user.id, ArchitectureIn(search_job_id=job.id))
    created = submit(
        session,
        queue=queue,
        owner_id=user.id,
        kind=JobKind.RETRAIN,
        dataset=dataset,
        config=config.to_dict(),
        epochs=config.epochs,
        architecture=architecture,
        idempotency_key=f"web-retrain-{submit_token}",
        max_attempts=settings.max_attempts,
        max_memory_bytes=settings.max_job_memory_bytes,
    )
    return RedirectResponse(f"/jobs/{created.job.id}", status_code=303)
