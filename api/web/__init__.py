"""The dashboard: server-rendered pages for people (Jinja2 templates, plain HTML and one CSS file).

Pages: ``/login``, ``/`` (jobs), ``/jobs/{id}``, ``/datasets``, ``/datasets/{id}``; forms POST
to ``/jobs/{id}/cancel``, ``/jobs/{id}/retrain`` and ``/logout``. The routes are thin: they
call the same store and ``api.services`` functions as the JSON API, with the same
ownership rules. Sign-in and CSRF: ``api.web.session``. None of this is in the OpenAPI schema.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.web import datasets, jobs, login
from api.web.render import HERE

router = APIRouter(include_in_schema=False)
for module in (login, jobs, datasets):
    router.include_router(module.router)

STYLESHEET = HERE / "static" / "dashboard.css"


@router.get("/static/dashboard.css")
def stylesheet() -> FileResponse:
    return FileResponse(STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})
