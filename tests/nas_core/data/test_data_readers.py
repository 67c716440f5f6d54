"""Readers: each format is recognised, scanned and decoded to the values that were written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nas_core.data import REGISTRY, DatasetError, DatasetSpec, detect_format, get_reader, open_dataset
from nas_core.data.formats import FORMATS


def _load(spec, case_id):
    return get_reader(spec.format).load(spec, spec.case(case_id))


def test_format_names_without_decoders_are_the_registry_in_detection_order():
    assert FORMATS == tuple(REGISTRY)


def test_nnunet_two_channels_scanned_and_loaded_exactly(files):
    root = files.nnunet(cases=3, channels=2, depth=3, size=16)
    spec = open_dataset(root)
    assert (spec.format, spec.modality, spec.channel_names) == ("nnunet", "MR", ("T2", "ADC"))
    assert spec.labels == {0: "background", 1: "zone_a", 2: "zone_b"} and spec.num_classes == 3
    assert [c.case_id for c in spec.cases] == ["case_000", "case_001", "case_002"]
    assert spec.is_3d and not spec.synthetic
    loaded = _load(spec, "case_001")
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "case_001_0001.nii.gz")))
    assert loaded.image.shape == (2, 3, 16, 16) and loaded.image.dtype == np.float32
    np.testing.assert_array_equal(loaded.image[1], written)
    assert loaded.label.dtype == np.int64
    np.testing.assert_array_equal(loaded.label, files.label(3, 16, 3))
    assert loaded.geometry["spacing"] == pytest.approx([0.8, 0.9, 2.5])
    assert loaded.geometry["suffix"] == ".nii.gz" and loaded.geometry["shape"] == [3, 16, 16]


@pytest.mark.parametrize("names, modality", [(("CT",), "CT"), (("FLAIR", "T1c"), "MR"), (("rgb",), "other")])
def test_modality_follows_channel_names(files, names, modality):
    root = files.nnunet(cases=1, channels=len(names), channel_names=names)
    assert open_dataset(root).modality == modality


def test_msd_4d_nifti_gives_one_channel_per_volume(files):
    root, arrays = files.msd(cases=2, depth=3, size=16)
    spec = open_dataset(root)
    assert spec.format == "nnunet" and spec.channel_names == ("FLAIR", "T1w") and spec.modality == "MR"
    assert spec.labels == {0: "background", 1: "tumour"}
    assert [c.case_id for c in spec.cases] == ["brain_000", "brain_001"]
    loaded = _load(spec, "brain_001")
    image, label = arrays["brain_001"]
    np.testing.assert_allclose(loaded.image, image)
    np.testing.assert_array_equal(loaded.label, label)
    assert loaded.geometry["spacing"] == pytest.approx([1.0, 1.0, 2.0])  # 3D geometry, not 4D


def test_synthetic_flag_read_from_dataset_json(files):
    assert open_dataset(files.nnunet(cases=1, extra={"synthetic": True})).synthetic


def test_promise12_pairs_segmentation_and_keeps_spacing(files):
    root = files.promise12()
    spec = open_dataset(root)
    assert (spec.format, spec.modality, spec.labels) == ("promise12", "MR", {0: "background", 1: "prostate"})
    by_id = {c.case_id: c for c in spec.cases}
    assert by_id["Case00"].label_path.name == "Case00_segmentation.mhd"
    assert by_id["Case01"].label_path is None
    loaded = _load(spec, "Case00")
    assert loaded.image.shape == (1, 4, 16, 16) and loaded.geometry["suffix"] == ".mhd"
    assert loaded.geometry["spacing"] == pytest.approx([0.6, 0.6, 3.6])
    np.testing.assert_array_equal(loaded.label, files.label(4, 16, 2))


def test_chaos_ct_hounsfield_units_slice_order_and_ground_pairing(files):
    root = files.chaos(slices=3)
    spec = open_dataset(root)
    assert (spec.format, spec.modality, [c.case_id for c in spec.cases]) == ("chaos_ct", "CT", ["1", "2"])
    loaded = _load(spec, "1")
    assert loaded.image.shape == (1, 3, 8, 8)
    # files are named in reverse anatomical order: sorted by position, slice k is file 2 - k
    for k in range(3):
        j = 2 - k
        assert loaded.image[0, k, 0, 0] == pytest.approx((1000 + 10 * j) * 2.0 - 1024.0)
        assert loaded.label[k].any(axis=1).sum() == j + 1  # the mask of file j travels with it
    assert set(np.unique(loaded.label)) == {0, 1}
    assert loaded.geometry["spacing"] == pytest.approx([0.8, 0.7, 5.0])
    assert loaded.geometry["origin"] == pytest.approx([0.0, 0.0, 0.0])


def test_chaos_ct_refuses_ground_with_wrong_slice_count(files):
    root = files.chaos(patients=("1",))
    next((root / "1" / "Ground").glob("*.png")).unlink()
    spec = open_dataset(root)
    with pytest.raises(DatasetError, match="2 PNG masks but .* 3 slices"):
        _load(spec, "1")


def test_png_folder_binary_masks_become_0_1(files):
    spec = open_dataset(files.picture_folder(cases=3))
    assert spec.format == "folder2d" and spec.channel_names == ("grey",) and spec.modality == "other"
    assert spec.labels == {0: "background", 1: "foreground"}
    loaded = _load(spec, "1")
    assert loaded.image.shape == (1, 1, 16, 16) and loaded.geometry["suffix"] == ".png"
    assert set(np.unique(loaded.label)) == {0, 1} and loaded.label[0, 2:4].all()


def test_rgb_pictures_give_three_channels_with_their_values(files):
    root = files.picture_folder(rgb=True, image_dir="images", mask_dir="masks")
    spec = open_dataset(root)
    loaded = _load(spec, "0")
    from PIL import Image

    rgb = np.asarray(Image.open(root / "images" / "0.png"))
    assert spec.channel_names == ("R", "G", "B")
    np.testing.assert_array_equal(loaded.image[:, 0], np.moveaxis(rgb, -1, 0))


def test_isbi_layout_loads_as_two_classes(files):
    root = files.tmp / "isbi"
    files.picture_folder(name="isbi/train", cases=2)
    spec = open_dataset(root)
    assert spec.format == "folder2d" and spec.num_classes == 2
    assert [c.case_id for c in spec.cases] == ["0", "1"]


def test_multiclass_mask_values_are_class_ids(files):
    spec = open_dataset(files.picture_folder(mask_values=(0, 1, 2)))
    assert spec.labels == {0: "background", 1: "class_1", 2: "class_2"}
    assert set(np.unique(_load(spec, "0").label)) == {0, 1, 2}


def test_drive_layout_pairs_by_case_number_with_vessel_masks_not_fov(files):
    spec = open_dataset(files.drive())
    assert spec.format == "folder2d" and [c.case_id for c in spec.cases] == ["21", "22"]
    assert spec.cases[0].label_path.parent.name == "1st_manual"
    loaded = _load(spec, "22")
    assert loaded.image.shape == (3, 1, 12, 10) and loaded.geometry["suffix"] == ".tif"
    assert loaded.label.sum() == 10 and loaded.label[0, 2].all()  # row 2 is the vessel, not the whole FOV


def test_explicit_pattern_pairs_differently_named_files(files):
    root = files.tmp / "custom"
    for cid in ("a1", "b2"):
        files.write_picture(root / "images" / f"scan_{cid}.png", np.zeros((8, 8), dtype=np.uint8))
        files.write_picture(root / "labels" / f"seg-{cid}-v2.png", np.full((8, 8), 255, dtype=np.uint8))
    spec = open_dataset(root, pattern=r"scan_(?P<id>\w+)", mask_pattern=r"seg-(?P<id>[a-z]\d)")
    assert [(c.case_id, c.label_path.name) for c in spec.cases] == [
        ("a1", "seg-a1-v2.png"),
        ("b2", "seg-b2-v2.png"),
    ]


def test_detection_prefers_specific_format_and_override_wins(files):
    root = files.nnunet(cases=1)
    files.picture_folder(name="nnunet")  # image/ + label/ beside dataset.json
    assert detect_format(root) == "nnunet"
    assert open_dataset(root, format="folder2d").format == "folder2d"


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda f: f.tmp / "missing", {}, "does not exist"),
        (
            lambda f: f.tmp,
            {},
            r"no dataset format recognised .*known formats: \['chaos_ct', 'folder2d', 'nnunet', 'promise12'\]",
        ),
        (lambda f: f.promise12(), {"format": "dicom"}, r"unknown dataset format 'dicom'; known formats"),
        (lambda f: f.promise12(), {"format": "folder2d"}, "no image/mask folders"),
        (lambda f: f.promise12(), {"pattern": "x"}, r"format 'promise12' takes no option"),
    ],
)
def test_bad_path_format_or_option_is_a_clear_error(files, make, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        open_dataset(make(files), **kwargs)


def test_spec_to_dict_is_json_and_round_trips(files):
    spec = open_dataset(files.nnunet(cases=2))
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["num_classes"] == 3 and data["labels"]["1"] == "zone_a"
    assert DatasetSpec.from_dict(data) == spec


def test_region_based_labels_are_refused_with_advice(files):
    root = files.nnunet(cases=1, labels={"background": 0, "whole": [1, 2]})
    with pytest.raises(DatasetError, match="region-based"):
        open_dataset(root)


def test_2d_nifti_and_mha_vector_images(files):
    root = files.tmp / "single"
    files.write_volume(root / "flat.nii.gz", np.ones((1, 8, 8), dtype=np.float32))
    vec = sitk.GetImageFromArray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3), isVector=True)
    sitk.WriteImage(vec, str(root / "rgb.mha"))
    from nas_core.data import load_image_for_inference

    assert load_image_for_inference(root / "flat.nii.gz").image.shape == (1, 1, 8, 8)
    rgb = load_image_for_inference(root / "rgb.mha")
    assert rgb.image.shape == (3, 1, 8, 8) and rgb.image[2, 0, 0, 0] == 2


def test_explicit_folders_override_the_defaults(files):
    root = files.drive() / "training"
    spec = open_dataset(root, image_dir="images", mask_dir="mask")  # FOV masks, chosen on purpose
    assert spec.cases[0].label_path.name == "21_training_mask.gif"
    assert get_reader("folder2d").load(spec, spec.cases[0]).label.all()
    assert open_dataset(root, image_dir="images").cases[0].label_path.parent.name == "1st_manual"
