"""A job's artefacts: list them; download one with HTTP Range, ETag and If-None-Match.

Downloads are Starlette's ``FileResponse`` (the framework's own file path: Range, If-Range, 416)
with 1 MiB reads, after the route has checked the owner, answered If-None-Match and validated the
Range by ``api.services.ranges`` (ASCII digits only, one range, errors as the API's JSON 416).
"""

from __future__ import annotations

import logging
import mimetypes
import os
import stat
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send

from api.body import JsonBodyRoute
from api.deps import OwnedJob, SessionDep, SettingsDep
from api.errors import NotFound, error_responses
from api.presenters import artifact_out
from api.routes import API_PREFIX
from api.schemas import ArtifactList
from api.services.deletion import delete_and_remove
from api.services.ranges import parse_range
from store import removal
from store.artifacts import ArtifactStore, get_artifact, list_artifacts

log = logging.getLogger(__name__)

router = APIRouter(prefix=API_PREFIX + "/jobs/{job_id}/artifacts", tags=["artifacts"],
                   route_class=JsonBodyRoute)

ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+@=-]*$"  # the names store.artifacts accepts
# The media type is guessed from the file's name: application/json for .json, octet-stream for checkpoints...
BINARY = {
    "application/json": {"schema": {"description": "a JSON artefact (e.g. the genotype), as stored"}},
    "*/*": {"schema": {"type": "string", "format": "binary"}},
}


@router.get("", response_model=ArtifactList, responses=error_responses(404))
def list_job_artifacts(job: OwnedJob, session: SessionDep) -> ArtifactList:
    """Checkpoints, genotype, metrics, logs... with size and sha256."""
    return ArtifactList(items=[artifact_out(a) for a in list_artifacts(session, job.id)])


class ArtifactFileResponse(FileResponse):
    """``FileResponse`` that serves the whole file unless the route accepted the request's Range.

    The route validates Range and If-Range itself (its errors are the API's JSON 416, several ranges
    or another unit are served whole); when it serves the whole file, Starlette must not see them.
    """

    chunk_size = 1024 * 1024  # a thread hop per read: Starlette's 64 KiB cost ~3.5x the server CPU per GB here

    def __init__(self, path: str | os.PathLike[str], *, ranged: bool, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.ranged = ranged

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.ranged:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]}
        await super().__call__(scope, receive, send)


def etag_matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/{name}",
    response_class=FileResponse,
    responses={
        200: {"description": "the whole file", "content": BINARY},
        206: {"description": "the requested byte range (Content-Range)", "content": BINARY},
        304: {"description": "not modified (If-None-Match matched the ETag, its sha256)"},
        **error_responses(404, 416),
    },
)
def download_artifact(
    job: OwnedJob,
    name: Annotated[str, Path(min_length=1, max_length=255, pattern=ARTIFACT_NAME_PATTERN)],
    session: SessionDep,
    settings: SettingsDep,
    range_: Annotated[str | None, Header(alias="Range", description="bytes=START-END, one range")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The file as an attachment; the ETag is its quoted sha256."""
    row = get_artifact(session, job.id, name)
    if row is None:
        raise NotFound.of("artifact", name, f" in job {job.id!r}; list them with GET /v1/jobs/{job.id}/artifacts")
    etag = f'"{row.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "Content-Disposition": f'attachment; filename="{row.name}"',
    }
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    path = ArtifactStore(settings.artifact_dir).path_of(row.location)
    try:
        stat_result = path.stat()
    except OSError:
        stat_result = None
    if stat_result is None or not stat.S_ISREG(stat_result.st_mode):
        log.error("artifact %s of job %s is registered but its file %s is missing", name, job.id, path)
        raise NotFound(f"artifact {name!r} of job {job.id!r} is registered but its file is missing from "
                       f"the artefact store; ask the operator to restore it", code="artifact_missing")
    ranged = parse_range(range_, stat_result.st_size, if_range, etag) is not None  # 416 if malformed
    media_type = mimetypes.guess_type(row.name)[0] or "application/octet-stream"
    return ArtifactFileResponse(path, ranged=ranged, headers=headers, media_type=media_type,
                                stat_result=stat_result)


@router.delete("/{name}", status_code=204, responses=error_responses(404, 409))
def delete_job_artifact(
    job: OwnedJob,
    name: Annotated[str, Path(min_length=1, max_length=255, pattern=ARTIFACT_NAME_PATTERN)],
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Delete one artefact of a finished job (row and file); 404 afterwards."""
    artifact = get_artifact(session, job.id, name)
    if artifact is None:
        raise NotFound(f"job {job.id} has no artefact {name!r}; list them with GET /v1/jobs/{job.id}/artifacts")
    return delete_and_remove(session, lambda: removal.delete_artifact(session, artifact, settings))
