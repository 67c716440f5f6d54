"""The one error the data package raises, so callers can catch bad data in one place."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """A dataset or file that cannot be used as given.

    The message says what is wrong and how to fix it; ``path`` names the offending
    file or folder when there is one, so a verification report can point at it.
    """

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
