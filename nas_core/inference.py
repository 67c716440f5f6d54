"""Using a trained checkpoint: score it on a dataset, or segment new images."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_core.checkpoint import load_model
from nas_core.data import (
    Frame,
    Normalisation,
    SliceDataset,
    load_image_for_inference,
    open_dataset,
    prepare_case,
    write_prediction,
)
from nas_core.data.errors import DatasetError
from nas_core.data.spec import LoadedCase
from nas_core.fast import fold_batchnorm
from nas_core.loop import evaluate, predict_slices
from nas_core.metrics import summarise
from nas_core.runtime import resolve_device

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd", ".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")


def _check_channels(meta: dict[str, Any], channels: int, what: str) -> None:
    if channels != meta["in_channels"]:
        raise DatasetError(f"{what} has {channels} channel(s) but the model was trained on "
                           f"{meta['in_channels']} ({', '.join(meta.get('channel_names', []))})")


def evaluate_checkpoint(checkpoint: Path, data: Path, data_format: str | None = None,
                        device: str = "auto") -> dict[str, Any]:
    """Hard DSC/IoU of a checkpoint on every case of a dataset (its imagesTs test cases too),
    per case and summarised, each case scored at its own size."""
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    model = fold_batchnorm(model)  # the same logits (to float rounding), fewer passes
    spec = open_dataset(data, format=data_format)
    _check_channels(meta, len(spec.channel_names), f"dataset {data}")
    if spec.num_classes != meta["num_classes"]:
        raise DatasetError(f"dataset {data} has {spec.num_classes} classes; the model predicts {meta['num_classes']}")
    norm = Normalisation.from_dict(meta["normalisation"])
    ids = [c.case_id for c in (*spec.cases, *spec.test_cases)]
    ds = SliceDataset(spec, ids, Frame.from_meta(meta), norm, native=True)
    scores = evaluate(model, ds, dev, meta["num_classes"], hd95=True)
    return {**summarise(scores, meta["class_names"]), "per_case": [s.to_dict() for s in scores],
            "checkpoint": str(checkpoint), "data": str(data),
            "scoring": "hard DSC per case at the case's own size (logits resampled bilinear, then argmax)"}


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise DatasetError(f"no image files in {path}; expected one of {', '.join(IMAGE_SUFFIXES)}")
    return files


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>[0-9]{4})$")


def group_cases(files: list[Path]) -> list[tuple[str, list[Path]]]:
    """(case id, channel files in order): nnU-Net's ``CASE_0000``, ``CASE_0001``... are one case;
    any other file is a case of its own, named by its stem."""
    cases: dict[str, list[Path]] = {}
    for f in files:
        m = CHANNEL_FILE.match(_stem(f))
        cases.setdefault(m["case"] if m else _stem(f), []).append(f)
    return sorted((cid, sorted(paths, key=lambda p: p.name)) for cid, paths in cases.items())


def _load_case(case_id: str, paths: list[Path]) -> LoadedCase:
    parts = [load_image_for_inference(p) for p in paths]
    shapes = {p.image.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise DatasetError(f"the channel files of case {case_id!r} differ in size: "
                           + ", ".join(f"{p.name} {part.image.shape[1:]}" for p, part in zip(paths, parts, strict=True)))
    return LoadedCase(case_id, np.concatenate([p.image for p in parts]), None, parts[0].geometry)


@torch.no_grad()
def predict_paths(checkpoint: Path, input_path: Path, output: Path, device: str = "auto", tta: bool = False,
                  batch_size: int = 16, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Segment one image, or every case in a folder; masks keep the input's format and geometry.

    Masks are named as nnU-Net names them, ``CASE<suffix>`` (the channel files
    ``CASE_0000``, ``CASE_0001``... of a case are read together as its channels), so
    nnU-Net's own evaluation runs on them unchanged.
    """
    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    model = fold_batchnorm(model)  # the same logits (to float rounding), fewer passes
    norm = Normalisation.from_dict(meta["normalisation"])
    written = []
    cases = group_cases(_inputs(input_path))
    for n, (case_id, paths) in enumerate(cases, 1):
        target = output / case_id
        if any(target.resolve() == p.with_name(_stem(p)).resolve() for p in paths):
            raise DatasetError(f"--output {output} would overwrite the input {paths[0]}; choose another folder")
        case = _load_case(case_id, paths)
        _check_channels(meta, case.image.shape[0], ", ".join(str(p) for p in paths))
        images, _, where = prepare_case(case, Frame.from_meta(meta), norm)
        native_size = tuple(case.image.shape[-2:])  # logits go back to the scan's own size
        labels = predict_slices(model, images, dev, amp=False, batch_size=batch_size, out_size=native_size,
                                tta=tta, placement=where).numpy()
        written.append(write_prediction(labels, case, target, meta["num_classes"]))
        if progress is not None:
            progress(f"[{n}/{len(cases)}] {case_id}: {written[-1]}")
    return written
