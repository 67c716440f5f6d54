"""Typed errors carrying the server's message, so scripts can catch what they can handle."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Any non-2xx answer: `status`, `code` and the server's `message` and `details`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        super().__init__(f"{status} {code}: {message}")


class AuthError(ApiError):
    """401: missing, wrong or revoked API key."""


class NotFound(ApiError):
    """404: no such resource, or it belongs to someone else."""


class ConflictError(ApiError):
    """409: the request conflicts with the resource's state."""


class ValidationFailed(ApiError):
    """422 (or 400): the request was refused; `details` says which field and why."""


class ChecksumMismatch(ValueError):
    """A downloaded file does not hash to the server's sha256 (the partial file is removed)."""

    def __init__(self, name: str, actual: str, expected: str) -> None:
        self.name, self.actual, self.expected = name, actual, expected
        super().__init__(f"{name}: sha256 {actual} does not match the server's {expected}; "
                         f"the partial file was removed, download it again")


def error_for(status: int, body: Any) -> ApiError:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code = err.get("code", "http_error")
    message = err.get("message") or (body.get("detail") if isinstance(body, dict) else None) or str(body)
    cls = {401: AuthError, 404: NotFound, 409: ConflictError, 400: ValidationFailed, 422: ValidationFailed}.get(
        status, ApiError)
    return cls(status, code, str(message), err.get("details"))
