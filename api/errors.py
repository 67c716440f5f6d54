"""The one mapping from errors to HTTP responses.

Every error body has one shape::

    {"error": {"code": "not_found", "message": "what went wrong and what to fix",
               "details": {...} | null, "request_id": "..."}}

Routes and services raise ``ApiError`` subclasses (or the domain's own exceptions,
mapped below); nothing else in ``api/`` builds an error response. Validation errors
give 422 with ``details.fields`` = {field: reason}; a lost database gives 503; any
other exception is logged with its request id and answered with a generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from nas_core.config import ConfigError
from nas_core.genotype import InvalidGenotype
from store.jobs import IdempotencyConflict
from store.pagination import InvalidCursor

log = logging.getLogger(__name__)

DB_RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error with its HTTP status, a stable machine code and a message saying what to fix."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status_code, code = 400, "bad_request"


class Unauthorized(ApiError):
    status_code, code = 401, "unauthorized"


class Forbidden(ApiError):
    status_code, code = 403, "forbidden"


class NotFound(ApiError):
    status_code, code = 404, "not_found"

    @classmethod
    def of(cls, resource: str, ident: str, hint: str = "") -> NotFound:
        """``dataset 'ds_1' not found`` (also for another user's rows: existence is never leaked)."""
        return cls(f"{resource} {ident!r} not found{hint}", details={"resource": resource, "id": ident})


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status_code, code = 413, "payload_too_large"


class TooManyRequests(ApiError):
    status_code, code = 429, "too_many_requests"


class InsufficientStorage(ApiError):
    status_code, code = 507, "insufficient_storage"


class UnsupportedMediaType(ApiError):
    status_code, code = 415, "unsupported_media_type"


class RangeNotSatisfiable(ApiError):
    status_code, code = 416, "range_not_satisfiable"


class Unprocessable(ApiError):
    status_code, code = 422, "unprocessable"


class ServiceUnavailable(ApiError):
    status_code, code = 503, "unavailable"


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_body(code: str, message: str, details: Any = None, request_id: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details, "request_id": request_id}}


def error_response(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, details, request_id_of(request))
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def field_name(loc: Sequence[Any]) -> str:
    """``("body", "config", "epochs")`` -> ``config.epochs``; query/path/header keep their prefix."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _reason(error: Mapping[str, Any]) -> str:
    if error.get("type") == "extra_forbidden":
        return "unknown field; remove it (see the OpenAPI schema for the accepted fields)"
    if error.get("type") == "missing":
        return "field required"
    return str(error.get("msg", "invalid value"))


def fields_from_errors(errors: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Pydantic errors as {field: reason}; several reasons for one field are joined with '; '."""
    fields: dict[str, str] = {}
    for error in errors:
        name = field_name(error.get("loc", ()))
        reason = _reason(error)
        fields[name] = f"{fields[name]}; {reason}" if name in fields else reason
    return fields


def validation_failed(fields: Mapping[str, str], code: str = "validation_error") -> Unprocessable:
    summary = "; ".join(f"{name}: {reason}" for name, reason in fields.items())
    return Unprocessable(f"invalid request: {summary}", code=code, details={"fields": dict(fields)})


# --- handlers: one per error family ------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _api_error(request, validation_failed(fields_from_errors(exc.errors())))


async def _config_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigError)
    fields = {f"config.{name}": reason for name, reason in exc.errors.items()}
    return await _api_error(request, validation_failed(fields, code="invalid_config"))


async def _invalid_genotype(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 422, "invalid_genotype", f"invalid genotype: {exc}")


async def _idempotency_conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 409, "idempotency_conflict", str(exc))


async def _invalid_cursor(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 400, "invalid_cursor", str(exc), {"fields": {"query.cursor": str(exc)}})


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable (request %s): %s", request_id_of(request), exc.__class__.__name__)
    return error_response(
        request,
        503,
        "database_unavailable",
        "database unavailable, retry later",
        headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
    )


NUL_MESSAGE = "cannot contain NUL (0x00)"  # psycopg's words for a text value PostgreSQL cannot store


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """A NUL character in any text the request carries is the caller's mistake (422); other data errors are 500."""
    if NUL_MESSAGE in str(getattr(exc, "orig", exc)):
        return error_response(request, 422, "validation_error",
                              "a text value in the request contains a NUL character (\\u0000); remove it",
                              {"fields": {}})
    return await _unhandled(request, exc)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}; see /docs for the API"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return error_response(request, exc.status_code, code, message, headers=headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    routes = request.app.router.routes
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]


def internal_error_body(request_id: str | None) -> dict[str, Any]:
    """The generic 500 body: no exception text, no stack trace; the request id finds the log line."""
    return error_body(
        "internal_error",
        f"internal server error; the failure was logged with request id {request_id}: "
        "retry, and report that id if it persists",
        None,
        request_id,
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_id_of(request)
    log.error("unhandled error in %s %s (request %s)", request.method, request.url.path, request_id,
              exc_info=exc)
    return JSONResponse(internal_error_body(request_id), status_code=500)


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Any]] = {
    ApiError: _api_error,
    RequestValidationError: _request_validation,
    ConfigError: _config_error,
    InvalidGenotype: _invalid_genotype,
    IdempotencyConflict: _idempotency_conflict,
    InvalidCursor: _invalid_cursor,
    OperationalError: _database_unavailable,
    PoolTimeoutError: _database_unavailable,
    DataError: _data_error,
    StarletteHTTPException: _http_exception,
    Exception: _unhandled,  # backstop; RequestContextMiddleware answers unhandled errors first
}


def install_error_handlers(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)


# Documented error responses for the OpenAPI schema -------------------------------------------

ERROR_DESCRIPTIONS = {
    400: "Bad request: a cursor this service did not issue, a body that is not UTF-8 JSON or is nested too "
         "deep (invalid_json), an upload that is not a zip or tar archive (not_an_archive) or is damaged or unsafe",
    401: "Missing, unknown or revoked API key (`Authorization: Bearer <key>`)",
    403: "Not served to this client's address (/metrics: THRIFTY_METRICS_ALLOW_IPS)",
    404: "Not found, or not yours",
    409: "Conflict with the resource's current state",
    413: "Body larger than the server's limit (a JSON body: 4 MiB; an upload: THRIFTY_MAX_UPLOAD_BYTES)",
    415: "Unsupported Content-Type",
    416: "Requested byte range not satisfiable",
    422: "Invalid input; `details.fields` maps each bad field to its reason. Also for valid JSON the data "
         "refuses: options that conflict (k must divide channels, w_lr_min at most w_lr), a path or archive that "
         "is not a valid dataset, a genotype that does not fit, a data leak, a job too large to run",
    429: "Too many uploads of yours at once; retry when one has finished",
    507: "Not enough free disk space on the server for this archive",
    503: "Database (or broker) unavailable; retry later",
}


# The body every error has, by reference: ``api.schemas.ErrorResponse``, which ``api.main`` adds to the
# schema's components. A reference, not the model, keeps this module below ``api.schemas`` (which
# imports ``api.deps``, which raises these errors): no import circle.
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


def error_responses(*statuses: int, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status documented with the ``ErrorResponse`` schema.

    401 (with ``auth``), 422 and 503 are always listed.
    """
    wanted = sorted({422, 503, *statuses, *([401] if auth else [])})
    return {status: {"description": ERROR_DESCRIPTIONS[status],
                     "content": {"application/json": {"schema": ERROR_SCHEMA}}} for status in wanted}
