"""Python client for the Thrifty NAS REST API (httpx)."""

from client.client import TERMINAL, Client
from client.download import DownloadProgress
from client.errors import ApiError, AuthError, ChecksumMismatch, ConflictError, NotFound, ValidationFailed

__all__ = ["TERMINAL", "ApiError", "AuthError", "ChecksumMismatch", "Client", "ConflictError", "DownloadProgress",
           "NotFound", "ValidationFailed"]
