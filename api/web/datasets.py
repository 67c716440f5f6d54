"""``/datasets`` and ``/datasets/{id}``: your datasets and their verification reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from api.deps import SessionDep
from api.errors import NotFound
from api.web.render import WebRoute, page
from api.web.session import WebUser
from store.datasets import get_dataset, list_datasets

router = APIRouter(route_class=WebRoute)


@router.get("/datasets")
def dataset_list(request: Request, user: WebUser, session: SessionDep) -> Response:
    return page(request, "datasets.html", datasets=list_datasets(session, user.id))


@router.get("/datasets/{dataset_id}")
def dataset_page(
    request: Request, dataset_id: Annotated[str, Path(min_length=1, max_length=64)], user: WebUser,
    session: SessionDep,
) -> Response:
    dataset = get_dataset(session, dataset_id, owner_id=user.id)
    if dataset is None:
        raise NotFound.of("dataset", dataset_id, "; it does not exist or is not yours")
    report = dataset.report or {}
    return page(request, "dataset.html", dataset=dataset, report=report, issues=report.get("issues") or [])
