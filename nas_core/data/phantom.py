"""A synthetic dataset of organ-like blobs on textured noise, for demos and tests.

It is written in the nnU-Net v2 layout, and its dataset.json says SYNTHETIC in
its name and description and carries "synthetic": true, so every screen that
shows it can say it is not patient data. Organs have distinct mean intensities
plus noise and a smooth texture, so a small network learns them in a few epochs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nas_core.data.errors import DatasetError

log = logging.getLogger(__name__)

BACKGROUND_LEVEL = 50.0
CLASS_STEP = 100.0
NOISE_STD = 15.0
TEXTURE_STD = 20.0


def _blob(
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    center: np.ndarray,
    radii: np.ndarray,
) -> np.ndarray:
    """An ellipsoid, rotated in-plane, with its outline wobbled by low-frequency noise."""
    z, y, x = coords
    angle = rng.uniform(0, np.pi)
    dx, dy = x - center[2], y - center[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    r = np.sqrt((u / radii[2]) ** 2 + (v / radii[1]) ** 2 + ((z - center[0]) / radii[0]) ** 2)
    theta = np.arctan2(v / radii[1], u / radii[2])
    outline = np.ones_like(r)
    for k in (2, 3, 4):
        outline += rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r < outline


def _label(size: int, depth: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class 1 is a large organ; smaller ones sit at spread angles, inside it or beside it."""
    zs = np.linspace(-1, 1, depth) if depth > 1 else np.zeros(1)
    coords = np.meshgrid(zs, np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    label = np.zeros((depth, size, size), dtype=np.uint8)
    center = np.array([0.0, *rng.normal(0, 0.08, 2)])
    radii = np.array([rng.uniform(0.8, 1.1), *rng.uniform(0.45, 0.6, 2)])
    label[_blob(coords, rng, center, radii)] = 1
    offset = rng.uniform(0, 2 * np.pi)
    for c in range(2, num_classes):
        angle = offset + 2 * np.pi * (c - 2) / max(1, num_classes - 2)
        dist = rng.uniform(0.2, 0.5)
        center = np.array(
            [rng.uniform(-0.3, 0.3) if depth > 1 else 0.0, dist * np.sin(angle), dist * np.cos(angle)]
        )
        radii = np.array([rng.uniform(0.4, 0.7), *rng.uniform(0.12, 0.2, 2)])
        label[_blob(coords, rng, center, radii)] = c
    return label


def _image(label: np.ndarray, channel: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Intensities: one level per class (order reversed on odd channels), texture, bias and noise."""
    order = np.arange(1, num_classes) if channel % 2 == 0 else np.arange(num_classes - 1, 0, -1)
    levels = np.concatenate([[BACKGROUND_LEVEL], BACKGROUND_LEVEL + CLASS_STEP * order])
    levels = levels + rng.uniform(-10, 10, num_classes)
    texture = gaussian_filter(rng.normal(size=label.shape), sigma=(0, 2, 2))
    texture *= TEXTURE_STD / max(float(texture.std()), 1e-6)
    bias = 1.0 + 0.1 * gaussian_filter(rng.normal(size=label.shape), sigma=(0, 8, 8)) * 8
    image = levels[label] * bias + texture + rng.normal(0, NOISE_STD, label.shape)
    return image.astype(np.float32)


def _write(array: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), useCompression=True)


def make_phantom_dataset(
    out_dir: Path | str,
    num_cases: int = 8,
    image_size: int = 64,
    depth: int = 1,
    num_classes: int = 3,
    channels: int = 1,
    seed: int = 0,
) -> Path:
    """Write a SYNTHETIC nnU-Net v2 dataset into ``out_dir`` and return ``out_dir``.

    depth = 1 gives 2D cases (one slice), depth > 1 volumes. Same arguments, same files.
    """
    if num_cases < 1 or image_size < 8 or depth < 1 or channels < 1 or not 2 <= num_classes <= 10:
        raise DatasetError(
            "phantom needs num_cases >= 1, image_size >= 8, depth >= 1, channels >= 1 and "
            f"2 <= num_classes <= 10; got {num_cases=}, {image_size=}, {depth=}, {channels=}, "
            f"{num_classes=}"
        )
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    spacing = (0.8, 0.8, 2.5) if depth > 1 else (1.0, 1.0, 1.0)
    for i in range(num_cases):
        rng = np.random.default_rng([seed, i])
        cid = f"phantom_{i:03d}"
        label = _label(image_size, depth, num_classes, rng)
        for ch in range(channels):
            _write(_image(label, ch, num_classes, rng), out / "imagesTr" / f"{cid}_{ch:04d}.nii.gz", spacing)
        _write(label, out / "labelsTr" / f"{cid}.nii.gz", spacing)
    labels = {"background": 0, **{f"organ_{c}": c for c in range(1, num_classes)}}
    dataset = {
        "name": "SYNTHETIC phantom",
        "description": "SYNTHETIC data: random organ-like blobs on textured noise, not patient images",
        "synthetic": True,
        "channel_names": {str(ch): f"SYNTHETIC_MR_{ch}" for ch in range(channels)},
        "labels": labels,
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "seed": seed,
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    log.info(
        "wrote SYNTHETIC phantom dataset to %s (%d cases, %dx%dx%d)",
        out,
        num_cases,
        depth,
        image_size,
        image_size,
    )
    return out
