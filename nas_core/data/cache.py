"""On-disk cache of prepared slices, so a second run does not decode files again.

A case's entry is keyed by a hash of its files (path, size, mtime), the image
size, the normalisation and the reader, so editing a file or a setting misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from nas_core.data.preprocess import Normalisation
from nas_core.data.spec import Case
from nas_core.io import atomic_write

log = logging.getLogger(__name__)

CACHE_VERSION = 4  # 2: entries also hold the labels at the case's own size; 3: and its spacing; 4: frames


def case_files(case: Case) -> list[Path]:
    """Every file a case is decoded from (folders such as DICOM series are expanded)."""
    paths = [*case.image_paths, *([case.label_path] if case.label_path else [])]
    files: list[Path] = []
    for p in paths:
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return files


def cache_key(case: Case, fmt: str, frame: dict[str, Any], norm: Normalisation) -> str:
    """Hex digest identifying the prepared slices of a case."""
    stats = []
    for f in case_files(case):
        st = f.stat()
        stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    payload = {
        "version": CACHE_VERSION,
        "format": fmt,
        "case": case.case_id,
        "meta": case.meta,
        "files": stats,
        "frame": frame,
        "normalisation": norm.to_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _entry(cache_dir: Path, case_id: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", case_id)[:64]
    return cache_dir / f"{safe}-{key[:20]}.npz"


class CachedCase(NamedTuple):
    images: torch.Tensor  # [D, C, H, W] in the working frame
    labels: torch.Tensor | None  # [D, H, W] in the working frame
    native_labels: torch.Tensor | None  # [D, H, W] at the case's own size
    spacing: list[float] | None = None  # mm along those axes


def load_cached(cache_dir: Path, case_id: str, key: str) -> CachedCase | None:
    """The cached slices of a case, or None on a miss or an unreadable entry."""
    path = _entry(cache_dir, case_id, key)
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            labels, native = (torch.from_numpy(data[k]) if k in data.files else None
                              for k in ("labels", "native_labels"))
            spacing = data["spacing"].tolist() if "spacing" in data.files else None
            return CachedCase(torch.from_numpy(data["images"]), labels, native, spacing)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable cache entry %s: %s", path, exc)
        return None


def save_cached(
    cache_dir: Path, case_id: str, key: str, images: torch.Tensor, labels: torch.Tensor | None,
    native_labels: torch.Tensor | None = None, spacing: list[float] | None = None,
) -> None:
    """Write an entry atomically (temp file + rename), so a crash never leaves half a file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"images": images.numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    if native_labels is not None:
        arrays["native_labels"] = native_labels.numpy()
    if spacing is not None:
        arrays["spacing"] = np.asarray(spacing, dtype=np.float64)
    # numpy's stubs read **arrays as its keyword options (allow_pickle): arrays only here
    atomic_write(_entry(cache_dir, case_id, key), lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
