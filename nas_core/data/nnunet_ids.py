"""nnU-Net's dataset names and ids: ``Dataset003_ACDC``, ``3`` or ``003`` under ``$nnUNet_raw``.

Plain path arithmetic (no image library, no torch), so that both the command line and the
web tier, which must not import the ML stack, find datasets as nnU-Net finds them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nas_core.data.errors import DatasetError

RAW_ENV = "nnUNet_raw"
_DATASET_NAME = re.compile(r"^Dataset(\d{3})_.+$")


def reference_kind(text: str) -> str | None:
    """``"id"`` (``3``, ``003``), ``"name"`` (``Dataset003_ACDC``), or None for anything else."""
    text = text.strip()
    if text.isdigit():
        return "id"
    return "name" if _DATASET_NAME.match(text) else None


def dataset_folders(root: Path) -> list[str]:
    """The ``DatasetXXX_Name`` folders of an nnU-Net raw folder, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _DATASET_NAME.match(p.name))


def find_in_raw(text: str, root: Path) -> Path:
    """The folder of ``root`` (an nnU-Net raw folder) that the name or id ``text`` names.

    DatasetError names what was looked for, where, and the datasets that are there when nothing
    or more than one folder matches.
    """
    text = text.strip()
    if reference_kind(text) == "name":
        if (root / text).is_dir():
            return root / text
        wanted = f"{RAW_ENV}/{text}"
        matches: list[Path] = []
    else:
        wanted = f"{RAW_ENV}/Dataset{int(text):03d}_*"
        matches = sorted(p for p in root.glob(f"Dataset{int(text):03d}_*") if p.is_dir())
        if len(matches) == 1:
            return matches[0]
    if matches:
        raise DatasetError(f"dataset id {text} is ambiguous: {len(matches)} folders match {wanted} "
                           f"({', '.join(p.name for p in matches)}); pass the full name", root)
    known = dataset_folders(root)
    raise DatasetError(f"no dataset {text!r}: looked for {wanted} in {root} ({RAW_ENV}); it holds "
                       f"{', '.join(known) if known else 'no DatasetXXX_Name folder'}", root)


def resolve_dataset_path(value: str | Path) -> Path:
    """The dataset folder ``value`` names: a path as given, or an nnU-Net dataset name or id.

    A path that exists wins. Otherwise, with ``nnUNet_raw`` set, ``Dataset003_ACDC`` is
    ``$nnUNet_raw/Dataset003_ACDC`` and ``3`` or ``003`` the one ``Dataset003_*`` folder there
    (nnU-Net's ids are 3 digits). DatasetError names what was looked for, and where, when
    nothing or more than one folder matches. Anything else comes back unchanged, so that the
    caller's "does not exist" names the path the user typed.
    """
    path = Path(value)
    text = str(value).strip()
    kind = reference_kind(text)
    if path.exists() or kind is None:
        return path
    raw = os.environ.get(RAW_ENV)
    if not raw:
        raise DatasetError(f"{text!r} is neither a folder nor findable: it looks like an nnU-Net dataset "
                           f"{kind}, but {RAW_ENV} is not set; set {RAW_ENV} to your "
                           "nnU-Net raw data folder, or pass the dataset's path", path)
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{RAW_ENV}={raw} is not a folder; fix {RAW_ENV} to find dataset {text!r}", root)
    return find_in_raw(text, root)
