"""Python client for the Thrifty NAS REST API (httpx)."""

from client.client import Client
from client.errors import ApiError, AuthError, ConflictError, NotFound, ValidationFailed

__all__ = ["ApiError", "AuthError", "Client", "ConflictError", "NotFound", "ValidationFailed"]
