"""Predictions are written in the input's format, size and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nas_core.data import (
    DatasetError,
    get_reader,
    load_image_for_inference,
    open_dataset,
    resize_labels,
    write_prediction,
)

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _geometry(img: sitk.Image):
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def test_nifti_round_trip_keeps_geometry_and_resizes_back(files, tmp_path):
    src = files.write_volume(
        tmp_path / "in" / "scan.nii.gz",
        np.zeros((3, 12, 20), np.float32),
        spacing=(0.7, 0.8, 2.5),
        origin=(10.0, -5.0, 3.0),
        direction=DIRECTION,
    )
    case = load_image_for_inference(src)
    assert case.case_id == "scan" and case.image.shape == (1, 3, 12, 20) and case.label is None
    small = np.zeros((3, 6, 10), np.int64)
    small[:, :3, :5] = 2
    out = write_prediction(small, case, tmp_path / "out" / "scan_pred")
    assert out.name == "scan_pred.nii.gz"
    written = sitk.ReadImage(str(out))
    expected = _geometry(sitk.ReadImage(str(src)))
    assert written.GetSize() == expected[0]
    for got, want in zip(_geometry(written)[1:], expected[1:], strict=True):
        assert got == pytest.approx(want)
    arr = sitk.GetArrayFromImage(written)
    np.testing.assert_array_equal(arr, resize_labels(small, (12, 20)).numpy())
    assert arr[:, :6, :10].min() == 2 and arr[:, 6:, :].max() == 0


def test_same_size_mask_is_written_exactly_for_metaimage(files, tmp_path):
    spec = open_dataset(files.promise12())
    case = get_reader(spec.format).load(spec, spec.case("Case00"))
    out = write_prediction(case.label, case, tmp_path / "Case00_pred")
    assert out.suffix == ".mhd" and out.with_suffix(".raw").is_file()
    written = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), case.label)
    assert written.GetSpacing() == pytest.approx((0.6, 0.6, 3.6))


def test_dicom_series_prediction_is_nifti_with_series_geometry(files, tmp_path):
    spec = open_dataset(files.chaos(patients=("1",)))
    case = get_reader(spec.format).load(spec, spec.case("1"))
    out = write_prediction(case.label, case, tmp_path / "liver")
    written = sitk.ReadImage(str(out))
    assert out.name == "liver.nii.gz" and written.GetSpacing() == pytest.approx((0.8, 0.7, 5.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), case.label)


def test_binary_png_prediction_is_0_255_at_the_original_size(files, tmp_path):
    src = files.write_picture(tmp_path / "21_training.tif", np.zeros((12, 10, 3), np.uint8))
    case = load_image_for_inference(src)
    assert case.image.shape == (3, 1, 12, 10) and case.geometry["suffix"] == ".tif"
    mask = np.zeros((1, 8, 8), np.int64)
    mask[0, :4] = 1
    out = write_prediction(mask, case, tmp_path / "pred" / "21")
    arr = np.asarray(Image.open(out))
    assert out.name == "21.png" and arr.shape == (12, 10) and set(np.unique(arr)) == {0, 255}
    assert arr[:6].min() == 255 and arr[6:].max() == 0
    assert set(np.unique(load_image_for_inference(out).image)) == {0.0, 255.0}


def test_multiclass_png_prediction_holds_class_ids(files, tmp_path):
    case = load_image_for_inference(files.write_picture(tmp_path / "x.png", np.zeros((8, 8), np.uint8)))
    mask = np.arange(64).reshape(1, 8, 8) % 3
    arr = np.asarray(Image.open(write_prediction(mask, case, tmp_path / "x_pred", num_classes=3)))
    np.testing.assert_array_equal(arr, mask[0])
    only_background_and_one = np.zeros((1, 8, 8), np.int64)
    only_background_and_one[0, 0, 0] = 1
    arr = np.asarray(
        Image.open(write_prediction(only_background_and_one, case, tmp_path / "y", num_classes=3))
    )
    assert arr[0, 0] == 1  # a multi-class prediction is not mistaken for a binary one


def test_mask_with_wrong_depth_is_refused(files, tmp_path):
    case = load_image_for_inference(
        files.write_volume(tmp_path / "v.nii.gz", np.zeros((3, 8, 8), np.float32))
    )
    with pytest.raises(DatasetError, match="expected \\[D, H, W\\] with D = 3"):
        write_prediction(np.zeros((2, 8, 8), np.int64), case, tmp_path / "p")


def test_unsupported_file_is_a_clear_error(files, tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        load_image_for_inference(tmp_path / "notes.txt")
