"""``POST /v1/retrains``: train a genotype (or a baseline) from scratch (202, then poll the job)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.body import JsonBodyRoute
from api.deps import CurrentUser, IdempotencyKey, QueueDep, SessionDep, SettingsDep
from api.errors import error_responses
from api.presenters import submitted
from api.routes import API_PREFIX
from api.schemas import JobOut, RetrainSubmit
from api.services.configs import retrain_config
from api.services.submit import check_no_leak, ready_dataset, resolve_architecture, submit
from store.models import JobKind

router = APIRouter(prefix=f"{API_PREFIX}/retrains", tags=["jobs"], route_class=JsonBodyRoute)


@router.post("", status_code=202, response_model=JobOut, responses=error_responses(400, 404, 409, 422))
def submit_retrain(
    body: RetrainSubmit,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a retrain of ``architecture``: a genotype id, a succeeded search's genotype, or a baseline."""
    dataset = ready_dataset(session, user.id, body.dataset_id)
    config = retrain_config(body.config)
    architecture = resolve_architecture(session, user.id, body.architecture)
    check_no_leak(session, architecture, dataset, config)
    created = submit(
        session,
        queue=queue,
        owner_id=user.id,
        kind=JobKind.RETRAIN,
        dataset=dataset,
        config=config.to_dict(),
        epochs=config.epochs,
        architecture=architecture,
        idempotency_key=idempotency_key,
        max_attempts=settings.max_attempts,
        max_memory_bytes=settings.max_job_memory_bytes,
    )
    return submitted(response, created)
