"""CHAOS CT: <patient>/DICOM_anon/*.dcm + <patient>/Ground/*.png (liver = 255).

DICOM tags are read with pydicom: slices are sorted along the slice normal by
ImagePositionPatient (InstanceNumber breaks ties or stands in when positions are
missing) and converted to Hounsfield units with RescaleSlope/RescaleIntercept.
Ground PNGs are paired with the DICOM files by name order (the i-th PNG by name
annotates the i-th .dcm by name, as CHAOS ships them) and reordered with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from nas_core.data.errors import DatasetError
from nas_core.data.imageio import Volume, read_pil
from nas_core.data.readers.base import Reader, apply_label_map
from nas_core.data.spec import Case, DatasetSpec

IMAGE_DIR = "DICOM_anon"
LABEL_DIR = "Ground"


def _dicom_files(series_dir: Path) -> list[Path]:
    files = sorted(p for p in series_dir.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
    if not files:
        raise DatasetError(
            f"no .dcm files in {series_dir}; a CHAOS patient needs {IMAGE_DIR}/*.dcm", series_dir
        )
    return files


def _read(path: Path, pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"cannot read DICOM {path} ({exc}); is it corrupt?", path) from exc


def _axes(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal from ImageOrientationPatient."""
    iop = np.asarray(getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    row, col = iop[:3], iop[3:]
    return row, col, np.cross(row, col)


def _sort_key(ds: pydicom.Dataset) -> tuple[float, int]:
    instance = int(getattr(ds, "InstanceNumber", 0) or 0)
    ipp = getattr(ds, "ImagePositionPatient", None)
    position = float(np.dot(np.asarray(ipp, dtype=np.float64), _axes(ds)[2])) if ipp is not None else 0.0
    return position, instance


def slice_order(series_dir: Path) -> list[int]:
    """Indices of the name-sorted .dcm files in anatomical order (headers only)."""
    headers = [_read(p, pixels=False) for p in _dicom_files(series_dir)]
    return sorted(range(len(headers)), key=lambda i: _sort_key(headers[i]))


def _geometry(first: pydicom.Dataset, positions: list[float]) -> dict[str, Any]:
    row, col, normal = _axes(first)
    ps = [float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0])]
    gaps = np.diff(positions)
    dz = float(np.median(np.abs(gaps))) if len(gaps) else float(getattr(first, "SliceThickness", 1.0) or 1.0)
    origin = [float(v) for v in getattr(first, "ImagePositionPatient", [0.0, 0.0, 0.0])]
    direction = np.stack([row, col, normal], axis=1).ravel()  # columns are the x, y, z axes
    return {
        "kind": "sitk",
        "suffix": ".dcm",
        "dimension": 3,
        "spacing": [ps[1], ps[0], dz if dz > 0 else 1.0],
        "origin": origin,
        "direction": [float(v) for v in direction],
    }


def read_dicom_series(series_dir: Path) -> Volume:
    """A DICOM folder -> [1, D, H, W] in Hounsfield units, slices in anatomical order."""
    files = _dicom_files(series_dir)
    datasets = [_read(p, pixels=True) for p in files]
    order = sorted(range(len(datasets)), key=lambda i: _sort_key(datasets[i]))
    slices = []
    for i in order:
        ds = datasets[i]
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except (AttributeError, ValueError, RuntimeError) as exc:
            raise DatasetError(f"cannot decode pixels of {files[i]} ({exc})", files[i]) from exc
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels * slope + intercept)
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise DatasetError(f"slices in {series_dir} differ in size: {sorted(shapes)}", series_dir)
    geometry = _geometry(datasets[order[0]], [_sort_key(datasets[i])[0] for i in order])
    arr = np.stack(slices)[None]
    geometry["shape"] = [int(s) for s in arr.shape[1:]]
    return Volume(arr, geometry, series_dir)


class ChaosCTReader(Reader):
    """One CT channel in HU; labels background and liver."""

    name = "chaos_ct"
    expects = "<patient>/DICOM_anon (CHAOS CT)"

    def detect(self, root: Path) -> bool:
        return any(p.is_dir() for p in root.glob(f"*/{IMAGE_DIR}"))

    def scan(self, root: Path, **options: Any) -> DatasetSpec:
        cases = []
        for series in sorted(p for p in root.glob(f"*/{IMAGE_DIR}") if p.is_dir()):
            ground = series.parent / LABEL_DIR
            cases.append(
                Case(
                    series.parent.name,
                    (series,),
                    ground if ground.is_dir() else None,
                    {"label_map": [[255, 1]]},
                )
            )
        return DatasetSpec(
            root=root,
            format=self.name,
            name=root.name,
            modality="CT",
            channel_names=("CT",),
            labels={0: "background", 1: "liver"},
            cases=tuple(cases),
            synthetic=False,
            is_3d=True,
        )

    def read_image(self, spec: DatasetSpec, case: Case, index: int) -> Volume:
        return read_dicom_series(case.image_paths[index])

    def read_label(self, spec: DatasetSpec, case: Case) -> Volume:
        ground = case.label_path
        if ground is None:
            raise DatasetError(f"case {case.case_id!r} has no {LABEL_DIR}/ folder")
        pngs = sorted(p for p in ground.iterdir() if p.suffix.lower() == ".png")
        order = slice_order(case.image_paths[0])
        if len(pngs) != len(order):
            raise DatasetError(
                f"{ground} has {len(pngs)} PNG masks but {case.image_paths[0]} has {len(order)} slices; "
                "CHAOS needs one mask per slice",
                ground,
            )
        masks = [read_pil(pngs[i], as_mask=True).array[0] for i in order]
        shapes = {m.shape for m in masks}
        if len(shapes) > 1:
            raise DatasetError(f"masks in {ground} differ in size: {sorted(shapes)}", ground)
        arr = apply_label_map(np.stack(masks), case.meta)
        # PNGs carry no spacing/origin: they take the series' geometry by construction
        geometry = {"kind": "png-stack", "suffix": ".png", "shape": [int(s) for s in arr.shape]}
        return Volume(arr, geometry, ground)
