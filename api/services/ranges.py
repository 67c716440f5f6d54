"""HTTP byte ranges (RFC 9110, section 14) for artefact downloads: one range per request.

``parse_range`` returns ``None`` to serve the whole file (no Range header, another unit,
several ranges, or an ``If-Range`` that no longer matches) or the half-open ``(start, end)``
to serve with 206; a malformed or unsatisfiable bytes range is refused with the API's JSON 416.
The route checks the header with it before Starlette's ``FileResponse`` serves the bytes: that
one answers a malformed range with a plain-text 400 and several ranges with a multipart body.
"""

from __future__ import annotations

import re

from api.errors import RangeNotSatisfiable

ASCII_DIGITS = re.compile(r"[0-9]+")


def _unsatisfiable(header: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"range {header!r} is not satisfiable for a file of {size} bytes; ask for bytes=START-END "
        f"with 0 <= START <= END < {size}",
        details={"size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


def parse_range(header: str | None, size: int, if_range: str | None = None, etag: str | None = None
                ) -> tuple[int, int] | None:
    if header is None or (if_range is not None and if_range != etag):
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None  # several ranges: served whole (allowed by RFC 9110)
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    # ASCII digits only: str.isdigit() accepts superscripts such as '\xb2', which int() refuses
    if not dash or not (first or last) or (first and not ASCII_DIGITS.fullmatch(first)) or (
            last and not ASCII_DIGITS.fullmatch(last)):
        raise _unsatisfiable(header, size)
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(size - length, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(header, size)
    return start, end
