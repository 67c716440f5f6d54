"""nnU-Net v2 raw folders and Medical Segmentation Decathlon (MSD) folders.

Both have a dataset.json beside imagesTr/ and labelsTr/. nnU-Net v2 stores one
file per channel (CASE_0000.nii.gz, CASE_0001.nii.gz) and labels {name: id};
MSD lists cases under "training", stores all channels in one 4D NIfTI and
labels {"id": name}.

Datasets are also found as nnU-Net finds them (:func:`resolve_dataset_path`, defined in the
torch-free ``nas_core.data.nnunet_ids``): with ``nnUNet_raw`` set, ``Dataset003_ACDC``, ``3`` or
``003`` name ``$nnUNet_raw/Dataset003_ACDC``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from nas_core.data.errors import DatasetError
from nas_core.data.imageio import read_sitk_size, suffix_of
from nas_core.data.nnunet_ids import resolve_dataset_path as resolve_dataset_path  # its old home
from nas_core.data.readers.base import Reader, modality_from_names
from nas_core.data.spec import Case, DatasetSpec

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot parse {path}: {exc}; fix the JSON", path) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object", path)
    return data


def parse_labels(raw: Any, path: Path) -> dict[int, str]:
    """Labels as {id: name}, from nnU-Net v2 {name: id} or MSD {"id": name}."""
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(
            f'{path} needs a non-empty \'labels\' object, e.g. {{"background": 0, "liver": 1}}', path
        )
    labels: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or isinstance(value, list):
            raise DatasetError(
                f"{path}: label {key!r} maps to {value!r}; region-based or boolean labels are not supported, "
                "give each class one integer id",
                path,
            )
        if isinstance(value, int):
            labels[value] = str(key)
        elif str(key).lstrip("-").isdigit():
            labels[int(key)] = str(value)
        else:
            raise DatasetError(
                f'{path}: cannot read label {key!r}: {value!r}; use {{name: id}} or {{"id": name}}', path
            )
    return dict(sorted(labels.items()))


def _channel_names(dj: dict[str, Any], path: Path) -> tuple[str, ...]:
    raw = dj.get("channel_names", dj.get("modality"))
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(
            f"{path} needs 'channel_names' (nnU-Net v2) or 'modality' (MSD), e.g. {{\"0\": \"CT\"}}", path
        )
    return tuple(str(raw[k]) for k in sorted(raw, key=int))


def _v2_cases(root: Path, dj: dict[str, Any], num_channels: int, part: str = "Tr") -> list[Case]:
    """Cases from file names: images{part}/CASE_XXXX<ending>, labels{part}/CASE<ending>."""
    ending = dj.get("file_ending", ".nii.gz")
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    ids = set()
    for f in (root / f"images{part}").glob(f"*{ending}"):
        m = pattern.match(f.name)
        if m:
            ids.add(m["case"])
        else:
            log.warning("ignoring %s: not named CASE_XXXX%s", f, ending)
    labels_dir = root / f"labels{part}"
    ids |= {f.name[: -len(ending)] for f in labels_dir.glob(f"*{ending}")} if labels_dir.is_dir() else set()
    cases = []
    for cid in sorted(ids):
        images = tuple(root / f"images{part}" / f"{cid}_{c:04d}{ending}" for c in range(num_channels))
        label = labels_dir / f"{cid}{ending}"
        cases.append(Case(cid, images, label if label.is_file() else None))
    return cases


def _listed_cases(root: Path, entries: Any, path: Path) -> list[Case]:
    """Cases listed in dataset.json: MSD "training" [{image, label}] or v2 "dataset" {id: {images, label}}."""
    if isinstance(entries, dict):  # nnU-Net v2 "dataset" key
        items = [(cid, e.get("images", []), e.get("label")) for cid, e in entries.items()]
    elif isinstance(entries, list):  # MSD "training"
        items = [(None, [e.get("image")], e.get("label")) for e in entries if isinstance(e, dict)]
    else:
        raise DatasetError(f"{path}: the case list must be a list or an object", path)
    cases = []
    for cid, images, label in items:
        if not images or not all(images):
            raise DatasetError(f"{path}: a listed case has no image path", path)
        image_paths = tuple(root / p for p in images)
        cid = cid or image_paths[0].name[: -len(suffix_of(image_paths[0]))]
        cases.append(Case(cid, image_paths, None if not label else root / label))
    return sorted(cases, key=lambda c: c.case_id)


class NnUNetReader(Reader):
    """nnU-Net v2 raw layout and Medical Segmentation Decathlon (MSD) folders."""

    name = "nnunet"
    expects = "dataset.json + imagesTr/ (nnU-Net/MSD)"

    def detect(self, root: Path) -> bool:
        return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()

    def scan(self, root: Path, **options: Any) -> DatasetSpec:
        path = root / "dataset.json"
        dj = _read_json(path)
        channels = _channel_names(dj, path)
        if "training" in dj:
            cases = _listed_cases(root, dj["training"], path)
        elif "dataset" in dj:
            cases = _listed_cases(root, dj["dataset"], path)
        else:
            cases = _v2_cases(root, dj, len(channels))
        # A labelled test set (imagesTs + labelsTs); unlabelled imagesTs are for inference only.
        test = [c for c in _v2_cases(root, dj, len(channels), "Ts") if c.label_path is not None] \
            if (root / "labelsTs").is_dir() else []
        return DatasetSpec(
            root=root,
            format=self.name,
            name=str(dj.get("name") or root.name),
            modality=modality_from_names(channels),
            channel_names=channels,
            labels=parse_labels(dj.get("labels"), path),
            cases=tuple(cases),
            synthetic=bool(dj.get("synthetic", False)),
            is_3d=_is_3d(cases),
            test_cases=tuple(test),
        )


def _is_3d(cases: list[Case]) -> bool:
    """Whether the first readable image has more than one slice (header only)."""
    for case in cases:
        for p in case.image_paths:
            if p.is_file():
                try:
                    size = read_sitk_size(p)
                except DatasetError:
                    continue
                return len(size) >= 3 and size[2] > 1
    return False
