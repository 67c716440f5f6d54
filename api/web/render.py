"""Templates, their filters, and the route class that answers the dashboard's errors as pages.

``WebRoute`` turns what the shared domain code raises into HTML instead of the API's JSON:
``LoginRequired`` -> 303 to ``/login``; an ``ApiError`` (404 for another user's job, 409 for
a finished job...) -> the error page with the same status and message; a bad form or
config -> 422. Anything else propagates to the app's generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.errors import ApiError, fields_from_errors
from nas_core.config import ConfigError
from nas_core.genotype import InvalidGenotype
from store.jobs import IdempotencyConflict
from store.pagination import InvalidCursor

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REFRESH_SECONDS = 5


class LoginRequired(Exception):
    """No valid ``thrifty_key`` cookie: the person is sent to the login form."""

    def __init__(self, next_path: str = "/") -> None:
        super().__init__(next_path)
        self.next_path = next_path


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: Any) -> str:
    """Metric values: floats to 4 significant digits, everything else as it is."""
    if isinstance(value, bool) or not isinstance(value, float):
        return "—" if value is None else str(value)
    return f"{value:.4g}"


def dsc(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = max(int(round(seconds)), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _viewer(request: Request) -> dict[str, Any]:
    """What every page's header needs: the signed-in user and the CSRF token of their forms."""
    return {"user": getattr(request.state, "web_user", None), "csrf_token": getattr(request.state, "csrf", "")}


templates = Jinja2Templates(directory=HERE / "templates", context_processors=[_viewer])
templates.env.filters.update(when=when, number=number, dsc=dsc, duration=duration, size=size)
templates.env.globals["refresh_seconds"] = REFRESH_SECONDS


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, status_code: int, title: str, message: str, **extra: Any) -> Response:
    return page(request, "error.html", status_code, title=title, message=message, **extra)


def login_redirect(next_path: str) -> RedirectResponse:
    target = "/login" if next_path in ("", "/") else f"/login?next={quote(next_path, safe='/')}"
    return RedirectResponse(target, status_code=303)


TITLES = {400: "Bad request", 403: "Refused", 404: "Not found", 409: "Not possible now", 422: "Invalid input"}


def _as_page(request: Request, exc: Exception) -> Response | None:
    if isinstance(exc, LoginRequired):
        return login_redirect(exc.next_path)
    if isinstance(exc, ApiError):
        return error_page(request, exc.status_code, TITLES.get(exc.status_code, "Error"), exc.message)
    if isinstance(exc, RequestValidationError):
        fields = fields_from_errors(exc.errors())
        return error_page(request, 422, TITLES[422], "the form was not filled in correctly", fields=fields)
    if isinstance(exc, ConfigError):
        return error_page(request, 422, TITLES[422], "the run settings are out of range", fields=exc.errors)
    if isinstance(exc, InvalidGenotype):
        return error_page(request, 422, TITLES[422], f"invalid genotype: {exc}")
    if isinstance(exc, IdempotencyConflict):
        return error_page(request, 409, TITLES[409], "this form was already submitted with other values; "
                          "reload the page and submit it again")
    if isinstance(exc, InvalidCursor):
        return error_page(request, 400, TITLES[400], f"{exc}; start again from the first page")
    return None


class WebRoute(APIRoute):
    """A route whose errors (from dependencies too) are answered as HTML pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = _as_page(request, exc)
                if response is None:
                    raise
                if response.status_code >= 400:
                    log.info("dashboard %s %s -> %d: %s", request.method, request.url.path,
                             response.status_code, exc)
                return response

        return handle
