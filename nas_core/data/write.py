"""Write a predicted mask back in its input's format and geometry; load one image for inference.

Formats written (by the input's suffix):
- NIfTI (.nii.gz/.nii), MetaImage (.mhd/.mha), NRRD: the same format, with the
  input's spacing, origin and direction.
- DICOM series (a CHAOS DICOM_anon folder): NIfTI (.nii.gz) with the series' geometry.
- 2D pictures (PNG, TIFF, GIF, JPEG, BMP): PNG. A binary mask (num_classes == 2,
  or only values 0/1 when num_classes is not given) is written 0/255, as DRIVE and
  ISBI store theirs; otherwise pixels hold the class ids 0..n-1 (uint8, uint16 above 255).
A mask predicted at another size (e.g. image_size x image_size slices) is resized
back to the input's size with nearest-neighbour interpolation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from PIL import Image

from nas_core.data.errors import DatasetError
from nas_core.data.imageio import read_any, stem_of
from nas_core.data.preprocess import resize_labels
from nas_core.data.readers.chaos_ct import read_dicom_series
from nas_core.data.spec import LoadedCase

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = {
    ".nii.gz": ".nii.gz",
    ".nii": ".nii",
    ".mhd": ".mhd",
    ".mha": ".mha",
    ".nrrd": ".nrrd",
    ".nhdr": ".nrrd",
    ".dcm": ".nii.gz",
}


def _mask_dtype(mask: np.ndarray) -> type:
    return np.uint8 if mask.max(initial=0) < 256 else np.uint16


def _to_input_size(mask: np.ndarray, geometry: dict[str, Any]) -> np.ndarray:
    shape = tuple(geometry.get("shape") or mask.shape)
    if mask.ndim != 3 or mask.shape[0] != shape[0]:
        raise DatasetError(
            f"mask shape {mask.shape} does not fit the input ({shape}): expected [D, H, W] with "
            f"D = {shape[0]}"
        )
    if mask.min(initial=0) < 0:
        raise DatasetError("mask holds negative values; pass class ids (argmax of the network's output)")
    if mask.shape[1:] != shape[1:]:
        mask = resize_labels(mask, shape[1:]).numpy()
    return mask


def _write_sitk(mask: np.ndarray, geometry: dict[str, Any], stem: Path, num_classes: int | None) -> Path:
    suffix = OUTPUT_SUFFIX.get(geometry.get("suffix", ""), ".nii.gz")
    arr: np.ndarray = mask.astype(_mask_dtype(mask))
    img = sitk.GetImageFromArray(arr[0] if geometry.get("dimension") == 2 else arr)
    img.SetSpacing(geometry["spacing"])
    img.SetOrigin(geometry["origin"])
    img.SetDirection(geometry["direction"])
    path = stem.with_name(stem.name + suffix)
    sitk.WriteImage(img, str(path), useCompression=suffix != ".mhd")
    return path


def _write_png(mask: np.ndarray, geometry: dict[str, Any], stem: Path, num_classes: int | None) -> Path:
    plane = mask[0]
    binary = num_classes == 2 if num_classes is not None else plane.max(initial=0) <= 1
    out = (plane > 0).astype(np.uint8) * 255 if binary else plane.astype(_mask_dtype(plane))
    path = stem.with_name(stem.name + ".png")
    Image.fromarray(out).save(path)
    return path


WRITERS: dict[str, Callable[[np.ndarray, dict[str, Any], Path, int | None], Path]] = {
    "sitk": _write_sitk,
    "2d": _write_png,
}


def write_prediction(
    mask: np.ndarray, case: LoadedCase, out_path_stem: Path | str, num_classes: int | None = None
) -> Path:
    """Write mask [D, H, W] (class ids) beside ``out_path_stem`` + the format's suffix; return the path."""
    geometry = case.geometry
    writer = WRITERS.get(geometry.get("kind", ""))
    if writer is None:
        raise DatasetError(
            f"cannot write a prediction for geometry kind {geometry.get('kind')!r}; known: {sorted(WRITERS)}"
        )
    stem = Path(out_path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = writer(_to_input_size(np.asarray(mask), geometry), geometry, stem, num_classes)
    log.info("wrote prediction for %s to %s", case.case_id, path)
    return path


def load_image_for_inference(path: Path | str) -> LoadedCase:
    """One image file (NIfTI, MetaImage, PNG, TIFF, ...) or DICOM folder, unlabelled, as a LoadedCase."""
    path = Path(path)
    vol = read_dicom_series(path) if path.is_dir() else read_any(path)
    geometry = dict(vol.geometry)
    geometry["shape"] = [int(s) for s in vol.array.shape[1:]]
    return LoadedCase(stem_of(path), vol.array.astype(np.float32, copy=False), None, geometry)
