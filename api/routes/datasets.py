"""``/v1/datasets``: register (a server path, or an uploaded archive), list, show."""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.body import JSON_MEDIA_TYPE, JsonBodyRoute, media_type, read_json
from api.deps import CurrentUser, OwnedDataset, SessionDep, SettingsDep, StateDep, cursor_query
from api.errors import UnsupportedMediaType, error_responses
from api.presenters import dataset_detail, dataset_out
from api.routes import API_PREFIX
from api.schemas import DatasetDetail, DatasetPage, DatasetRegister
from api.services.datasets import new_upload_folder, register_path, register_upload
from api.services.deletion import delete_and_remove
from api.services.uploads import receive_upload
from store import removal
from store.models import Dataset
from store.pagination import MAX_LIMIT, keyset_page

router = APIRouter(prefix=f"{API_PREFIX}/datasets", tags=["datasets"], route_class=JsonBodyRoute)

REGISTER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DatasetRegister"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/DatasetUpload"}},
        },
    }
}


async def _json_body(request: Request) -> DatasetRegister:
    """The JSON registration, read as every route reads JSON (``api.body.read_json``)."""
    data = await read_json(request)
    try:
        return DatasetRegister.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


@router.post(
    "",
    status_code=201,
    response_model=DatasetDetail,
    summary="Register a dataset (a server path as JSON, or a multipart archive upload)",
    responses=error_responses(400, 409, 413, 415, 429, 507),
    openapi_extra=REGISTER_BODY,
)
async def register_dataset(
    request: Request, response: Response, user: CurrentUser, session: SessionDep, state: StateDep
) -> DatasetDetail:
    """Every file is verified first; a dataset with any problem is refused (422) with the report."""
    kind, _ = media_type(request)  # exact, not a prefix
    settings = state.settings
    if kind == "multipart/form-data":
        with state.upload_slot(user.id):  # a user's uploads in flight are bounded (429)
            work = await run_in_threadpool(new_upload_folder, settings)
            try:
                upload = await receive_upload(request, settings.max_upload_bytes, work)
                dataset = await run_in_threadpool(
                    register_upload, session, settings, state.upload_limits, user.id, upload, work
                )
            finally:
                await run_in_threadpool(shutil.rmtree, work, True)
    elif kind == JSON_MEDIA_TYPE:
        body = await _json_body(request)
        dataset = await run_in_threadpool(
            register_path, session, settings, user.id, body.name, body.path, body.format
        )
    else:
        raise UnsupportedMediaType(
            f"Content-Type {request.headers.get('content-type', '(none)')[:100]!r} is not accepted here: send "
            f"{{name, path, format?}} as 'Content-Type: {JSON_MEDIA_TYPE}' (UTF-8) to register a server path, or "
            f"'multipart/form-data' with a 'file' archive to upload one",
            details={"accepted": [JSON_MEDIA_TYPE, "multipart/form-data"]},
        )
    response.headers["Location"] = f"{API_PREFIX}/datasets/{dataset.id}"
    return dataset_detail(dataset)


@router.get("", response_model=DatasetPage, responses=error_responses(400))
def list_datasets(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[str | None, cursor_query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> DatasetPage:
    """Your datasets, newest first."""
    stmt = select(Dataset).where(Dataset.owner_id == user.id)
    page = keyset_page(session, stmt, Dataset.created_at, Dataset.id, cursor=cursor, limit=limit)
    return DatasetPage(items=[dataset_out(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", response_model=DatasetDetail, responses=error_responses(404))
def get_dataset(dataset: OwnedDataset) -> DatasetDetail:
    """One dataset of yours, with its verification report."""
    return dataset_detail(dataset)


@router.delete("/{dataset_id}", status_code=204, responses=error_responses(404, 409))
def delete_dataset(dataset: OwnedDataset, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a dataset no job uses (409 naming them otherwise); an uploaded one's files go too."""
    return delete_and_remove(session, lambda: removal.delete_dataset(session, dataset, settings))
