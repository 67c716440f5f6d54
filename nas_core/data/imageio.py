"""Decode one image file into a channel-first array plus the geometry to write it back.

SimpleITK reads volumes (NIfTI, MetaImage, NRRD), Pillow reads 2D pictures; the
suffix picks the library through a table, not an if-chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from nas_core.data.errors import DatasetError

SITK_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr")
PIL_SUFFIXES = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Volume:
    """One decoded file: array [C, D, H, W] for images, [D, H, W] for labels."""

    array: np.ndarray
    geometry: dict[str, Any]
    path: Path


def suffix_of(path: Path) -> str:
    """The format suffix, lower-case, treating ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def stem_of(path: Path) -> str:
    """The file name without its format suffix (``x.nii.gz`` -> ``x``)."""
    return path.name[: len(path.name) - len(suffix_of(path))]


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DatasetError(f"file not found: {path}; check that it exists and is readable", path)


def sitk_geometry(img: sitk.Image, suffix: str) -> dict[str, Any]:
    """Spacing/origin/direction of a SimpleITK image, JSON-able."""
    return {
        "kind": "sitk",
        "suffix": suffix,
        "dimension": img.GetDimension(),
        "spacing": [float(v) for v in img.GetSpacing()],
        "origin": [float(v) for v in img.GetOrigin()],
        "direction": [float(v) for v in img.GetDirection()],
    }


def _channels_of_sitk(img: sitk.Image) -> tuple[np.ndarray, sitk.Image]:
    """Split a SimpleITK image into [C, D, H, W] and a 2D/3D reference for geometry."""
    if img.GetDimension() == 4:  # MSD-style 4D NIfTI: the 4th axis holds the channels
        size = list(img.GetSize())
        channels = []
        ref = None
        for c in range(size[3]):
            vol = sitk.Extract(img, size[:3] + [0], [0, 0, 0, c])
            ref = ref or vol
            channels.append(sitk.GetArrayFromImage(vol))
        assert ref is not None, "a 4D image has at least one channel"
        return np.stack(channels), ref
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:  # vector pixels, e.g. RGB .mha
        arr = np.moveaxis(arr, -1, 0)
    else:
        arr = arr[None]
    if img.GetDimension() == 2:
        arr = arr[:, None]
    return arr, img


def read_sitk(path: Path, as_mask: bool = False) -> Volume:
    """Read a volume with SimpleITK; labels come back [D, H, W]."""
    _require_file(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DatasetError(
            f"cannot read {path} with SimpleITK ({_first_line(exc)}); is it corrupt?", path
        ) from exc
    arr, ref = _channels_of_sitk(img)
    return _finish(arr, sitk_geometry(ref, suffix_of(path)), path, as_mask)


def read_sitk_size(path: Path) -> tuple[int, ...]:
    """Image size (x, y, z[, c]) from the header only, without decoding pixels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DatasetError(f"cannot read the header of {path} ({_first_line(exc)})", path) from exc
    return tuple(reader.GetSize())


def _palette_is_grey(img: Image.Image) -> bool:
    palette = img.getpalette() or []
    used = np.unique(np.asarray(img))
    rgb = np.asarray(palette + [0] * (768 - len(palette)), dtype=np.int64).reshape(-1, 3)[used]
    return bool(np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))


def _pil_image_array(img: Image.Image) -> np.ndarray:
    """Picture -> [C, H, W]: RGB keeps 3 channels, grey 1, alpha is dropped."""
    if img.mode == "P":
        img = img.convert("L" if _palette_is_grey(img) else "RGB")
    elif img.mode in ("1", "LA"):
        img = img.convert("L")
    elif img.mode not in ("L", "RGB", "I", "F") and not img.mode.startswith("I;"):
        img = img.convert("RGB")  # RGBA, CMYK, YCbCr ...
    arr = np.asarray(img)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def _pil_mask_array(img: Image.Image, path: Path) -> np.ndarray:
    """Mask -> [1, H, W]: palette indices are class ids unless the palette is grey."""
    if (img.mode == "P" and _palette_is_grey(img)) or img.mode in ("1", "LA"):
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            raise DatasetError(
                f"mask {path} is a colour image; masks must hold one class id per pixel "
                "(save it as greyscale or as a palette PNG whose indices are the class ids)",
                path,
            )
        arr = rgb[..., 0]
    return arr[None]


def read_pil(path: Path, as_mask: bool = False) -> Volume:
    """Read a 2D picture with Pillow as a one-slice volume (D = 1)."""
    _require_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _pil_mask_array(img, path) if as_mask else _pil_image_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"cannot read {path} with Pillow ({_first_line(exc)}); is it corrupt?", path
        ) from exc
    geometry = {"kind": "2d", "suffix": suffix_of(path)}
    return _finish(arr[:, None], geometry, path, as_mask)


def _finish(arr: np.ndarray, geometry: dict[str, Any], path: Path, as_mask: bool) -> Volume:
    geometry["shape"] = [int(v) for v in arr.shape[1:]]
    if not as_mask:
        return Volume(arr, geometry, path)
    if arr.shape[0] != 1:
        raise DatasetError(f"label {path} has {arr.shape[0]} channels; a label must have one", path)
    return Volume(arr[0], geometry, path)


READERS_BY_SUFFIX: dict[str, Callable[[Path, bool], Volume]] = {
    **{s: read_sitk for s in SITK_SUFFIXES},
    **{s: read_pil for s in PIL_SUFFIXES},
}


def read_any(path: Path, as_mask: bool = False) -> Volume:
    """Read any supported single file, picking the library from the suffix."""
    path = Path(path)
    read = READERS_BY_SUFFIX.get(suffix_of(path))
    if read is None:
        raise DatasetError(
            f"unsupported file type {suffix_of(path)!r} for {path}; supported: {sorted(READERS_BY_SUFFIX)}",
            path,
        )
    return read(path, as_mask)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
