"""One way every DELETE route ends: rows deleted and committed, then the files removed; 204.

``delete`` is one of ``store.removal``'s functions, partially applied: it deletes the rows in
the request's session and returns the files to remove. A refusal (a running job, a dataset
still in use) is a 409 carrying the store's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import Response
from sqlalchemy.orm import Session

from api.errors import Conflict
from store import removal


def delete_and_remove(session: Session, delete: Callable[[], list[Path]]) -> Response:
    try:
        files = delete()
    except removal.StillInUse as exc:
        raise Conflict(str(exc), code=exc.code) from None
    session.commit()
    removal.remove_files(files)  # after the commit: a failed one leaves every file in place
    return Response(status_code=204)
