"""``GET /v1/me``: who the key belongs to and how much the artefact store holds for them."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from api.body import JsonBodyRoute
from api.deps import CurrentUser, SessionDep
from api.errors import error_responses
from api.routes import API_PREFIX
from api.schemas import MeOut
from store.models import Dataset, Job
from store.removal import storage_bytes

router = APIRouter(prefix=API_PREFIX, tags=["account"], route_class=JsonBodyRoute)


@router.get("/me", response_model=MeOut, responses=error_responses())
def me(user: CurrentUser, session: SessionDep) -> MeOut:
    """Your name, counts, and the bytes of your stored artefacts (free them with DELETE)."""
    count = lambda model: session.scalar(select(func.count()).select_from(model).where(model.owner_id == user.id))  # noqa: E731
    return MeOut(id=user.id, name=user.name, datasets=count(Dataset) or 0, jobs=count(Job) or 0,
                 storage_bytes=storage_bytes(session, user.id))
