"""The one way a JSON request body is read, for every route that takes one.

``read_json`` reads the body with a byte limit (counted while it streams, and refused
at once when ``Content-Length`` announces more), decodes it as strict UTF-8, parses it
and checks its nesting depth. Every failure is a 4xx in the API's error shape that says
what to fix, never a 500:

* 415 ``unsupported_media_type``: ``Content-Type`` is not exactly ``application/json``
  (``charset``, when given, must be UTF-8);
* 413 ``payload_too_large``: more than ``MAX_JSON_BYTES`` bytes;
* 400 ``invalid_json``: not UTF-8, not JSON, a number too long to read, an unpaired
  surrogate escape (no such character exists), or arrays/objects nested deeper than
  ``MAX_JSON_DEPTH``;
* 422 ``validation_error``: an empty body (the schema's checks come after, also 422).

Routes whose body is a model get it through ``JsonBodyRoute`` (FastAPI's own reader never
sees an unchecked body); a route that parses by hand (``POST /v1/datasets``, JSON or
multipart) calls ``read_json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType, error_responses

MAX_JSON_BYTES = 4 * 1024 * 1024  # a config naming ~100,000 validation cases still fits
MAX_JSON_DEPTH = 32  # the deepest request the API defines is 3 levels (retrain -> config -> arch_betas)
JSON_MEDIA_TYPE = "application/json"
_DIGITS = re.compile(r"[0-9]+")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \uD800-\uDFFF: maybe unpaired, worth a look


class InvalidJson(BadRequest):
    code = "invalid_json"


def media_type(request: Request) -> tuple[str, dict[str, str]]:
    """``Content-Type``'s media type (lower case) and its parameters (names lower case, quotes removed)."""
    raw = request.headers.get("content-type", "")
    kind, *rest = raw.split(";")
    parameters = {}
    for item in rest:
        name, _, value = item.partition("=")
        parameters[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), parameters


def check_json_media_type(request: Request) -> None:
    """415 unless ``Content-Type`` is ``application/json`` (exactly; ``+json`` suffixes are other formats)."""
    kind, parameters = media_type(request)
    charset = parameters.get("charset", "utf-8").lower()
    if kind != JSON_MEDIA_TYPE or charset not in ("utf-8", "utf8"):
        shown = request.headers.get("content-type", "(none)")
        raise UnsupportedMediaType(
            f"Content-Type {shown[:100]!r} is not accepted here: send the body as JSON encoded in UTF-8 with "
            f"'Content-Type: {JSON_MEDIA_TYPE}'",
            details={"accepted": [JSON_MEDIA_TYPE]},
        )


def _too_large(size: int | None) -> PayloadTooLarge:
    got = f" ({size} bytes)" if size is not None else ""
    return PayloadTooLarge(
        f"the JSON body is larger than {MAX_JSON_BYTES} bytes{got}; send a smaller request (a dataset's files "
        f"are uploaded as multipart/form-data, not JSON)",
        details={"max_json_bytes": MAX_JSON_BYTES},
    )


async def read_limited(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    """The body, or 413 as soon as it (or its announced ``Content-Length``) passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if _DIGITS.fullmatch(declared) and int(declared) > limit:
        raise _too_large(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(None)
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(message: str) -> InvalidJson:
    return InvalidJson(f"the request body is not valid JSON: {message}", details={"fields": {"body": message}})


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The parsed body; ``InvalidJson`` (400) naming the problem and where it is."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"byte {exc.start} is not UTF-8 (0x{raw[exc.start]:02x}); encode the body as UTF-8") from None
    if text.startswith("\ufeff"):
        raise _invalid("it starts with a byte order mark (U+FEFF); send UTF-8 without one")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:  # arrays/objects nested thousands deep
        raise _invalid(f"arrays or objects are nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _invalid(f"a value cannot be read ({exc}); send shorter numbers") from None
    _check_nesting(value, max_depth, check_text=_SURROGATE_ESCAPE.search(raw) is not None)
    return value


def _check_nesting(value: Any, max_depth: int, *, check_text: bool) -> None:
    """Depth (iteratively: a deep value must not exhaust the stack here either) and, if asked, text
    that UTF-8 cannot encode (``"\\ud800"`` parses to a lone surrogate, which no database stores)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise _invalid(f"arrays or objects are nested deeper than {max_depth} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif check_text and isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid(f"the text {item[:40]!r} holds an unpaired surrogate escape (\\ud800-\\udfff), "
                               f"which is no character") from None


async def read_json(request: Request) -> Any:
    """The checked JSON body of ``request`` (see the module doc for each refusal)."""
    return (await _read_checked(request))[1]


async def _read_checked(request: Request) -> tuple[bytes, Any]:
    check_json_media_type(request)
    raw = await read_limited(request)
    if not raw.strip():
        raise Unprocessable("the request body is empty: send a JSON object (see the OpenAPI schema)",
                            code="validation_error", details={"fields": {"body": "field required"}})
    return raw, parse_json(raw)


class _CheckedRequest(Request):
    """A request whose body ``read_json`` has read: FastAPI's own reading gets the checked value."""

    def __init__(self, request: Request, raw: bytes, value: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._checked_raw, self._checked_value = raw, value

    async def body(self) -> bytes:
        return self._checked_raw

    async def json(self) -> Any:
        return self._checked_value


class JsonBodyRoute(APIRoute):
    """An API route; one whose body is a JSON model reads it through ``read_json`` first.

    Its OpenAPI entry lists the answers that reading gives (400, 413, 415).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._takes_json():
            self.responses = {**error_responses(400, 413, 415), **self.responses}

    def _takes_json(self) -> bool:
        return self.body_field is not None and not isinstance(self.body_field.field_info, params.Form)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self._takes_json():
            return handler

        async def read_then_handle(request: Request) -> Response:
            raw, value = await _read_checked(request)
            return await handler(_CheckedRequest(request, raw, value))

        return read_then_handle
