"""``POST /v1/searches``: submit a PC-DARTS architecture search (202, then poll the job)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.body import JsonBodyRoute
from api.deps import CurrentUser, IdempotencyKey, QueueDep, SessionDep, SettingsDep
from api.errors import error_responses
from api.presenters import submitted
from api.routes import API_PREFIX
from api.schemas import JobOut, SearchSubmit
from api.services.configs import search_config
from api.services.submit import ready_dataset, submit
from store.models import JobKind

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["jobs"], route_class=JsonBodyRoute)


@router.post("", status_code=202, response_model=JobOut, responses=error_responses(400, 404, 409))
def submit_search(
    body: SearchSubmit,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a search on one of your datasets; ``Location`` names the job to poll."""
    dataset = ready_dataset(session, user.id, body.dataset_id)
    config = search_config(body.config)
    created = submit(
        session,
        queue=queue,
        owner_id=user.id,
        kind=JobKind.SEARCH,
        dataset=dataset,
        config=config.to_dict(),
        epochs=config.epochs,
        architecture=None,
        idempotency_key=idempotency_key,
        max_attempts=settings.max_attempts,
        max_memory_bytes=settings.max_job_memory_bytes,
    )
    return submitted(response, created)
