"""2D image/mask folders (PNG, TIFF, GIF, JPEG, BMP), read with Pillow.

Images and masks live in two sibling folders (image/ + label/, images/ + masks/,
train/image + train/label, DRIVE's training/images + training/1st_manual). Files
are paired by identical stem, by leading token ("21_training" ~ "21_manual1") or
by first number ("img_001" ~ "mask_001"), whichever pairs the most files; or by
an explicit ``pattern``: a regex with a named group ``id`` (``mask_pattern`` for
masks, default the same). Masks holding only 0 and 255 become {0, 1}; any other
values are class ids.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.data.errors import DatasetError
from nas_core.data.imageio import PIL_SUFFIXES, read_pil, stem_of
from nas_core.data.readers.base import Reader
from nas_core.data.spec import Case, DatasetSpec

log = logging.getLogger(__name__)

IMAGE_DIRS = ("image", "images", "img", "imgs")
# label folders before mask/masks: DRIVE keeps field-of-view masks in mask/ beside 1st_manual/
MASK_DIRS = (
    "label",
    "labels",
    "1st_manual",
    "manual",
    "gt",
    "groundtruth",
    "ground_truth",
    "annotations",
    "masks",
    "mask",
)
PARENTS = (".", "train", "training")

KeyFn = Callable[[str], str | None]


def _first_number(stem: str) -> str | None:
    m = re.search(r"\d+", stem)
    return str(int(m.group())) if m else None


STRATEGIES: dict[str, KeyFn] = {
    "stem": lambda stem: stem,
    "leading token": lambda stem: re.split(r"[_\-. ]", stem, maxsplit=1)[0] or None,
    "first number": _first_number,
}


def _pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PIL_SUFFIXES)


def _subdirs(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}


def find_folders(root: Path) -> tuple[Path, Path] | None:
    """The first (images, masks) sibling folders under root, root/train or root/training."""
    for parent in PARENTS:
        dirs = _subdirs(root / parent)
        for image_name in IMAGE_DIRS:
            for mask_name in MASK_DIRS:
                if image_name in dirs and mask_name in dirs and _pictures(dirs[image_name]):
                    return dirs[image_name], dirs[mask_name]
    return None


def _keyed(files: list[Path], key: KeyFn) -> dict[str, Path] | None:
    """{key: file}, or None when the key does not tell the files apart."""
    out: dict[str, Path] = {}
    for f in files:
        k = key(stem_of(f))
        if k is None:
            continue
        if k in out:
            return None
        out[k] = f
    return out


def _regex_key(pattern: str) -> KeyFn:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc
    if "id" not in rx.groupindex:
        raise DatasetError(f"pattern {pattern!r} needs a named group 'id', e.g. r'(?P<id>\\d+)_training'")
    return lambda stem: m["id"] if (m := rx.search(stem)) else None


def pair_files(
    images: list[Path], masks: list[Path], pattern: str | None = None, mask_pattern: str | None = None
) -> dict[str, tuple[Path, Path | None]]:
    """{case id: (image, mask or None)} using the pattern or the best automatic strategy."""
    if pattern:
        image_key, mask_key = _regex_key(pattern), _regex_key(mask_pattern or pattern)
        by_image, by_mask = _keyed(images, image_key), _keyed(masks, mask_key)
        if by_image is None or by_mask is None:
            raise DatasetError(f"pattern {pattern!r} gives the same id to several files; make 'id' unique")
    else:
        best: tuple[int, dict[str, Path], dict[str, Path]] | None = None
        for name, key in STRATEGIES.items():
            by_image, by_mask = _keyed(images, key), _keyed(masks, key)
            if by_image is None or by_mask is None:
                continue
            pairs = len(by_image.keys() & by_mask.keys())
            if best is None or pairs > best[0]:
                best = (pairs, by_image, by_mask)
                log.debug("pairing by %s pairs %d files", name, pairs)
        if best is None:
            raise DatasetError(
                "cannot pair images with masks by name; pass pattern=r'(?P<id>...)' to say how"
            )
        _, by_image, by_mask = best
    return {k: (f, by_mask.get(k)) for k, f in sorted(by_image.items())}


def mask_value_map(masks: list[Path]) -> tuple[dict[int, str], list[list[int]]]:
    """Labels and stored-value map from the values found in the masks.

    Masks holding only 0/255 are binary (255 -> 1); otherwise values are class ids.
    Unreadable masks are skipped here; verification reports them one by one.
    """
    values: set[int] = set()
    for mask in masks:
        try:
            values |= {int(v) for v in np.unique(read_pil(mask, as_mask=True).array)}
        except (DatasetError, ValueError, OverflowError) as exc:
            log.warning("skipping %s while collecting label values: %s", mask, exc)
    if values <= {0, 255} and 255 in values:
        return {0: "background", 1: "foreground"}, [[255, 1]]
    return {v: ("background" if v == 0 else f"class_{v}") for v in sorted(values | {0})}, []


class Folder2DReader(Reader):
    """2D picture folders; RGB images give 3 channels, grey images 1."""

    name = "folder2d"
    expects = "image/mask folders (image/ + label/, images/ + masks/, DRIVE training/images + 1st_manual/)"
    options = ("image_dir", "mask_dir", "pattern", "mask_pattern")

    def detect(self, root: Path) -> bool:
        return find_folders(root) is not None

    def _folders(self, root: Path, image_dir: str | None, mask_dir: str | None) -> tuple[Path, Path | None]:
        if image_dir is None and mask_dir is None:
            found = find_folders(root)
            if found is None:
                raise DatasetError(
                    f"no image/mask folders in {root}: expected one of {IMAGE_DIRS} beside one of {MASK_DIRS} "
                    f"(under {PARENTS}); pass image_dir=... and mask_dir=...",
                    root,
                )
            return found
        images = root / (image_dir or "images")
        siblings = _subdirs(images.parent)
        masks = root / mask_dir if mask_dir else next((siblings[n] for n in MASK_DIRS if n in siblings), None)
        if not images.is_dir():
            raise DatasetError(f"image folder {images} does not exist", images)
        if masks is not None and not masks.is_dir():
            raise DatasetError(f"mask folder {masks} does not exist", masks)
        return images, masks

    def scan(
        self,
        root: Path,
        image_dir: str | None = None,
        mask_dir: str | None = None,
        pattern: str | None = None,
        mask_pattern: str | None = None,
        **options: Any,
    ) -> DatasetSpec:
        image_folder, mask_folder = self._folders(root, image_dir, mask_dir)
        images = _pictures(image_folder)
        masks = _pictures(mask_folder) if mask_folder is not None else []
        pairs = pair_files(images, masks, pattern, mask_pattern)
        labels, value_map = mask_value_map([m for _, m in pairs.values() if m is not None])
        cases = tuple(Case(cid, (img,), mask, {"label_map": value_map}) for cid, (img, mask) in pairs.items())
        return DatasetSpec(
            root=root,
            format=self.name,
            name=root.name,
            modality="other",
            channel_names=_channel_names(images),
            labels=labels,
            cases=cases,
            synthetic=False,
            is_3d=False,
        )


def _channel_names(images: list[Path]) -> tuple[str, ...]:
    for path in images:
        try:
            channels = read_pil(path).array.shape[0]
        except DatasetError:
            continue
        return (
            ("R", "G", "B") if channels == 3 else tuple(f"grey{i}" if i else "grey" for i in range(channels))
        )
    return ("grey",)
