"""Server paths a user may register: only folders inside the configured data roots.

A path is refused if it contains ``..``, if it (after following every symlink) lies
outside all data roots, or if it is not an existing folder. Relative paths are taken
relative to the first data root that holds them.

Every file the dataset will be read from must lie inside the roots too: a symlink
anywhere inside the folder (a file or a sub-folder) that leads outside all data roots
refuses the whole folder, naming the links. Links that stay inside the roots are
followed and checked in turn. This is checked at registration; a link planted in the
folder afterwards (by someone with write access to the data root) is not.

As nnU-Net does, a dataset may also be named by its nnU-Net name or id (``Dataset003_ACDC``,
``3``) when the server has ``nnUNet_raw`` set to a folder inside the data roots: the folder
found there passes the same checks as any path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from api.errors import Unprocessable
from nas_core.data.errors import DatasetError
from nas_core.data.nnunet_ids import RAW_ENV, find_in_raw, reference_kind


def _refuse(message: str, roots: Sequence[Path]) -> Unprocessable:
    return Unprocessable(
        message,
        code="invalid_path",
        details={"fields": {"path": message}, "data_roots": [str(r) for r in roots]},
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


MAX_LINKS_NAMED = 5


def escaping_links(folder: Path, real_roots: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
    """(link, where it leads) for every symlink under ``folder`` that leads outside ``real_roots``.

    Symlinked folders that stay inside the roots are walked too (each real folder once).
    """
    seen: set[Path] = set()
    pending = [folder]
    while pending:
        top = pending.pop()
        real_top = Path(os.path.realpath(top))
        if real_top in seen:
            continue
        seen.add(real_top)
        for current, dirs, files in os.walk(top, followlinks=False):
            for name in (*dirs, *files):
                entry = Path(current) / name
                if not entry.is_symlink():
                    continue
                target = Path(os.path.realpath(entry))
                if not any(_inside(target, root) for root in real_roots):
                    yield entry, target
                elif name in dirs:
                    pending.append(entry)


def resolve_data_path(raw: str, roots: Sequence[Path]) -> Path:
    """The real folder ``raw`` names, guaranteed inside one of ``roots``; else ``Unprocessable``."""
    try:
        return _resolve(raw, roots)
    except OSError as exc:  # e.g. a name longer than the file system allows, or no permission
        raise _refuse(f"path {raw[:200]!r} cannot be read on the server: {exc.strerror or exc}", roots) from None


def _resolve(raw: str, roots: Sequence[Path]) -> Path:
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
    links = [(link.relative_to(real), target) for link, target in escaping_links(real, real_roots)]
    if links:
        named = ", ".join(f"{link} -> {target}" for link, target in links[:MAX_LINKS_NAMED])
        more = f" and {len(links) - MAX_LINKS_NAMED} more" if len(links) > MAX_LINKS_NAMED else ""
        raise _refuse(f"path {raw!r} holds symlinks that lead outside the data roots: {named}{more}; "
                      f"copy those files under a data root instead", roots)
    return real


def resolve_dataset_folder(raw: str, roots: Sequence[Path]) -> Path:
    """:func:`resolve_data_path`, where ``raw`` may also be an nnU-Net dataset name or id.

    A folder of that name under a root wins (as on the command line); otherwise the name or id is
    looked up in ``$nnUNet_raw``, which must lie inside the roots, and what it finds is checked
    like any path (so a link there cannot lead out of the roots).
    """
    single = len(PurePosixPath(raw).parts) == 1 and not {"\\", "\x00"} & set(raw)  # NUL: refused below
    kind = reference_kind(raw) if single else None
    try:
        if kind is None or any((root / raw).exists() for root in roots):
            return resolve_data_path(raw, roots)
        found = _nnunet_folder(raw, kind, roots)
    except OSError as exc:
        raise _refuse(f"path {raw[:200]!r} cannot be read on the server: {exc.strerror or exc}", roots) from None
    try:
        return resolve_data_path(str(found), roots)
    except Unprocessable as exc:
        raise _refuse(f"{raw!r} names the nnU-Net dataset {found}, but {exc.message}", roots) from None


def _nnunet_folder(raw: str, kind: str, roots: Sequence[Path]) -> Path:
    """The folder of ``$nnUNet_raw`` that the nnU-Net name or id ``raw`` names; refusals say what to fix."""
    missing = f"path {raw!r} does not exist under the data roots"
    configured = os.environ.get(RAW_ENV, "").strip()
    if not configured:
        raise _refuse(f"{missing}; it looks like an nnU-Net dataset {kind}, but this server has no {RAW_ENV} "
                      f"folder set: give the dataset's folder under a data root (or have the administrator set "
                      f"{RAW_ENV} to an nnU-Net raw folder inside the data roots)", roots)
    folder = Path(os.path.realpath(Path(configured).expanduser()))
    if not any(_inside(folder, Path(os.path.realpath(root))) for root in roots):
        raise _refuse(f"{missing}, and nnU-Net dataset {kind}s are not looked up: this server's {RAW_ENV} "
                      f"folder is outside its data roots (the administrator must add it to them); give the "
                      f"dataset's folder under a data root", roots)
    if not folder.is_dir():
        raise _refuse(f"{missing}, and this server's {RAW_ENV} ({folder}) is not a folder, so nnU-Net dataset "
                      f"{kind}s cannot be looked up; give the dataset's folder under a data root", roots)
    try:
        return find_in_raw(raw, folder)
    except DatasetError as exc:
        raise _refuse(f"{exc}; give a dataset found there (its name or number), or a folder under the data roots",
                      roots) from None
