"""Server paths a user may register: only folders inside the configured data roots.

A path is refused if it contains ``..``, if it (after following every symlink) lies
outside all data roots, or if it is not an existing folder. Relative paths are taken
relative to the first data root that holds them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from api.errors import Unprocessable


def _refuse(message: str, roots: Sequence[Path]) -> Unprocessable:
    return Unprocessable(
        message,
        code="invalid_path",
        details={"fields": {"path": message}, "data_roots": [str(r) for r in roots]},
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_data_path(raw: str, roots: Sequence[Path]) -> Path:
    """The real folder ``raw`` names, guaranteed inside one of ``roots``; else ``Unprocessable``."""
    if "\x00" in raw:
        raise _refuse("path contains a NUL byte", roots)
    if ".." in PurePosixPath(raw).parts or ".." in Path(raw).parts:
        raise _refuse(f"path {raw!r} contains '..': give the folder's path without parent references", roots)
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    given = Path(raw).expanduser() if raw.startswith("~") else Path(raw)
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [root / given for root in roots]
        candidates = [c for c in candidates if c.exists()] or candidates[:1]
    lexical = candidates[0]
    real = Path(os.path.realpath(lexical))
    if not any(_inside(real, root) for root in real_roots):
        lexically_inside = any(_inside(Path(os.path.abspath(lexical)), Path(os.path.abspath(r))) for r in roots)
        if lexically_inside:
            reason = f"path {raw!r} goes through a symlink that leads outside the data roots (to {real})"
        else:
            reason = f"path {raw!r} is outside the data roots; put the dataset under one of them"
        raise _refuse(reason, roots)
    if not real.exists():
        raise _refuse(f"path {raw!r} does not exist on the server", roots)
    if not real.is_dir():
        raise _refuse(f"path {raw!r} is not a folder; give the dataset's top folder", roots)
    return real
