"""Tiny datasets written on the fly, one factory per format (no dependence on real data)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_volume(
    path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None
) -> Path:
    """[D, H, W] (or [C, D, H, W] for a 4D MSD file) -> a SimpleITK-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    dim = img.GetDimension()
    img.SetSpacing(tuple(spacing) + (1.0,) * (dim - len(spacing)))
    img.SetOrigin(tuple(origin) + (0.0,) * (dim - len(origin)))
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path


def write_nnunet(root: Path, modality: str, volumes: list[tuple[np.ndarray, np.ndarray]],
                 spacings: list[tuple[float, ...]]) -> Path:
    """An nnU-Net v2 dataset of one channel and one organ: case i is ``volumes[i]`` (image, label)
    at ``spacings[i]`` (x, y, z)."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": modality},
                                                   "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}))
    for i, ((image, label), spacing) in enumerate(zip(volumes, spacings, strict=True)):
        write_volume(root / "imagesTr" / f"c{i}_0000.nii.gz", image.astype(np.float32), spacing)
        write_volume(root / "labelsTr" / f"c{i}.nii.gz", label.astype(np.uint8), spacing)
    return root


def write_4d_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """[C, D, H, W] -> a 4D NIfTI stored x, y, z, channel, as MSD ships them (written by nibabel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.transpose(3, 2, 1, 0), np.diag([*spacing, 1.0])), str(path))
    return path


def write_picture(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_dicom(
    path: Path,
    stored: np.ndarray,
    z: float,
    instance: int,
    slope: float,
    intercept: float,
    spacing=(0.7, 0.8),
) -> Path:
    """One CT slice: uint16 stored values, HU = stored * slope + intercept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [spacing[0], spacing[1]]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.InstanceNumber = instance
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


class Files:
    """Factories for tiny datasets under a temporary folder (and the file writers, for single files)."""

    write_volume = staticmethod(write_volume)
    write_4d_nifti = staticmethod(write_4d_nifti)
    write_picture = staticmethod(write_picture)
    write_dicom = staticmethod(write_dicom)

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rng = np.random.default_rng(0)

    def nnunet(
        self,
        name: str = "nnunet",
        cases: int = 3,
        channels: int = 2,
        depth: int = 3,
        size: int = 16,
        channel_names=("T2", "ADC"),
        labels=None,
        spacing=(0.8, 0.9, 2.5),
        extra=None,
    ) -> Path:
        """nnU-Net v2 raw layout; label k fills a square so every class appears."""
        root = self.tmp / name
        labels = labels or {"background": 0, "zone_a": 1, "zone_b": 2}
        root.mkdir(parents=True, exist_ok=True)
        for i in range(cases):
            cid = f"case_{i:03d}"
            for c in range(channels):
                img = self.rng.normal(100 * (c + 1), 10, (depth, size, size)).astype(np.float32)
                write_volume(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", img, spacing)
            write_volume(root / "labelsTr" / f"{cid}.nii.gz", self.label(depth, size, len(labels)), spacing)
        dj = {
            "channel_names": {str(c): channel_names[c] for c in range(channels)},
            "labels": labels,
            "numTraining": cases,
            "file_ending": ".nii.gz",
            "name": name,
            **(extra or {}),
        }
        (root / "dataset.json").write_text(json.dumps(dj))
        return root

    @staticmethod
    def label(depth: int, size: int, num_classes: int) -> np.ndarray:
        lab = np.zeros((depth, size, size), dtype=np.uint8)
        for k in range(1, num_classes):
            lab[:, 2 * k : 2 * k + 3, 2 : size - 2] = k
        return lab

    def msd(
        self, name: str = "Task01_Test", cases: int = 2, depth: int = 3, size: int = 16
    ) -> tuple[Path, dict]:
        """MSD layout with 4D two-channel NIfTI images; returns root and the arrays written."""
        root = self.tmp / name
        arrays, training = {}, []
        for i in range(cases):
            cid = f"brain_{i:03d}"
            img = self.rng.normal(0, 1, (2, depth, size, size)).astype(np.float32)
            lab = self.label(depth, size, 2)
            write_4d_nifti(root / "imagesTr" / f"{cid}.nii.gz", img, (1.0, 1.0, 2.0))
            write_volume(root / "labelsTr" / f"{cid}.nii.gz", lab, (1.0, 1.0, 2.0))
            arrays[cid] = (img, lab)
            training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
        dj = {
            "name": name,
            "modality": {"0": "FLAIR", "1": "T1w"},
            "labels": {"0": "background", "1": "tumour"},
            "numTraining": cases,
            "training": training,
            "test": [],
            "tensorImageSize": "4D",
        }
        (root / "dataset.json").write_text(json.dumps(dj))
        return root, arrays

    def promise12(self, name: str = "promise") -> Path:
        root = self.tmp / name
        img = self.rng.normal(300, 50, (4, 16, 16)).astype(np.float32)
        write_volume(root / "Case00.mhd", img, (0.6, 0.6, 3.6))
        write_volume(root / "Case00_segmentation.mhd", self.label(4, 16, 2), (0.6, 0.6, 3.6))
        write_volume(root / "Case01.mhd", img, (0.6, 0.6, 3.6))  # a test case: no segmentation
        return root

    def picture_folder(
        self,
        name: str = "pics",
        image_dir: str = "image",
        mask_dir: str = "label",
        cases: int = 3,
        size: int = 16,
        rgb: bool = False,
        mask_values=(0, 255),
    ) -> Path:
        root = self.tmp / name
        for i in range(cases):
            shape = (size, size, 3) if rgb else (size, size)
            write_picture(root / image_dir / f"{i}.png", self.rng.integers(0, 255, shape, dtype=np.uint8))
            mask = np.full((size, size), mask_values[0], dtype=np.uint8)
            for k, v in enumerate(mask_values[1:]):
                mask[2 + 3 * k : 4 + 3 * k, :] = v
            write_picture(root / mask_dir / f"{i}.png", mask)
        return root

    def drive(self, name: str = "drive") -> Path:
        """DRIVE layout: RGB TIFF + GIF vessel masks, plus field-of-view masks that must not be used."""
        root = self.tmp / name / "training"
        for cid in (21, 22):
            write_picture(
                root / "images" / f"{cid}_training.tif",
                self.rng.integers(0, 255, (12, 10, 3), dtype=np.uint8),
            )
            vessels = np.zeros((12, 10), dtype=np.uint8)
            vessels[cid - 20, :] = 255
            write_picture(root / "1st_manual" / f"{cid}_manual1.gif", vessels)
            write_picture(root / "mask" / f"{cid}_training_mask.gif", np.full((12, 10), 255, dtype=np.uint8))
        return self.tmp / name

    def chaos(self, name: str = "chaos", patients=("1", "2"), slices: int = 3, size: int = 8) -> Path:
        """CHAOS CT: DICOM_anon/*.dcm named in reverse anatomical order + Ground/*.png (liver 255).

        Slice named j has stored value 1000 + 10 j everywhere and its Ground mask
        marks j + 1 rows, so tests can check that each mask stays with its slice.
        """
        root = self.tmp / name
        for p in patients:
            for j in range(slices):
                stored = np.full((size, size), 1000 + 10 * j, dtype=np.uint16)
                write_dicom(
                    root / p / "DICOM_anon" / f"i{j:04d},0000b.dcm",
                    stored,
                    z=5.0 * (slices - 1 - j),
                    instance=j + 1,
                    slope=2.0,
                    intercept=-1024.0,
                )
                mask = np.zeros((size, size), dtype=np.uint8)
                mask[: j + 1] = 255
                write_picture(root / p / "Ground" / f"liver_GT_{j:03d}.png", mask)
        return root


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)
