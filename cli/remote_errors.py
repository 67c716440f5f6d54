"""Client errors -> a clear message on stderr and an exit code, never a traceback.

Exit codes of the remote commands: 0 done; 1 the server failed (5xx), could not be reached,
a download did not check out, or a watched job failed or was cancelled; 2 the request
was refused (bad input, unknown id, missing or wrong API key, conflict) or a local file
is missing; 130 interrupted. With ``--json`` the error also goes to stdout as
``{"error": {"status", "code", "message", "details"}}`` for scripts.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import typer
from rich.console import Console

from client.errors import ApiError, AuthError, ChecksumMismatch, ValidationFailed

err_console = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("thrifty.remote")

KEY_HINT = ("set THRIFTY_API_KEY or pass --api-key (an operator creates one with "
            "`thrifty-nas keys create NAME`)")


def _fail(message: str, code: int, as_json: bool, error: dict[str, Any] | None = None,
          hint: str | None = None) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"hint: {hint}", markup=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps({"error": error or {"code": "client_error", "message": message}}))
    return typer.Exit(code)


def _api_error(exc: ApiError, as_json: bool) -> typer.Exit:
    error = {"status": exc.status, "code": exc.code, "message": exc.message, "details": exc.details}
    message = exc.message
    fields = exc.details.get("fields") if isinstance(exc.details, dict) else None
    if isinstance(exc, ValidationFailed) and fields and len(fields) > 1:
        message += "".join(f"\n  {name}: {reason}" for name, reason in fields.items())
    hint = KEY_HINT if isinstance(exc, AuthError) else None
    return _fail(f"{message} ({exc.status} {exc.code})", 2 if exc.status < 500 else 1, as_json, error, hint)


def remote_errors(func: F) -> F:
    """Wrap a command taking ``url`` and ``as_json`` so client errors end it cleanly."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        url, as_json = kwargs.get("url", "?"), bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except ApiError as exc:
            raise _api_error(exc, as_json) from None
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise _fail(f"cannot reach the Thrifty NAS server at {url}; is `thrifty-nas up` running? "
                        f"(set THRIFTY_URL or pass --url)", 1, as_json,
                        {"code": "unreachable", "message": f"cannot reach {url}"}) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _fail(f"invalid server URL {url!r}: {str(exc).rstrip('.')}; give one like http://127.0.0.1:8000", 2,
                        as_json) from None
        except httpx.TransportError as exc:
            log.debug("transport error", exc_info=True)
            raise _fail(f"lost the connection to {url} ({exc.__class__.__name__}: {exc}); run the command "
                        f"again (a download resumes where it stopped)", 1, as_json,
                        {"code": "transport_error", "message": str(exc)}) from None
        except ChecksumMismatch as exc:
            raise _fail(str(exc), 1, as_json, {"code": "checksum_mismatch", "message": str(exc)}) from None
        except TimeoutError as exc:
            raise _fail(str(exc), 1, as_json, {"code": "timeout", "message": str(exc)}) from None
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError) as exc:
            raise _fail(str(exc), 2, as_json) from None

    return wrapper  # type: ignore[return-value]
