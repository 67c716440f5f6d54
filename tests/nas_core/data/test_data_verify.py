"""Verification names every bad file and why, and a bad dataset can be refused as a whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas_core.data import DatasetError, get_reader, open_dataset, require_valid, verify_dataset
from tests.nas_core.data.conftest import write_nnunet

SPACING = (0.8, 0.9, 2.5)


def _problems(report):
    return {(i.path.rsplit("/", 1)[-1], i.case_id): i.problem for i in report.issues}


@pytest.fixture
def broken(files):
    """Eight cases, seven of them broken in a different way."""
    root = files.nnunet(cases=8, channels=2, depth=2, size=16, spacing=SPACING)
    img, lab = root / "imagesTr", root / "labelsTr"
    (img / "case_000_0001.nii.gz").write_bytes(b"not a nifti at all")
    files.write_volume(lab / "case_001.nii.gz", np.zeros((2, 12, 16), np.uint8), SPACING)
    seven = files.label(2, 16, 3)
    seven[0, 0, 0] = 7
    files.write_volume(lab / "case_002.nii.gz", seven, SPACING)
    files.write_volume(lab / "case_003.nii.gz", files.label(2, 16, 3).astype(np.float32) + 0.5, SPACING)
    (img / "case_004_0001.nii.gz").unlink()
    (lab / "case_005.nii.gz").unlink()
    files.write_volume(lab / "case_006.nii.gz", files.label(2, 16, 3), (1.6, 0.9, 2.5))
    files.write_volume(img / "case_007_0001.nii.gz", np.zeros((2, 16, 20), np.float32), SPACING)
    return root


def test_every_kind_of_problem_is_reported_with_its_file(broken):
    report = verify_dataset(broken)
    problems = _problems(report)
    assert not report.ok and report.num_cases == 8 and report.format == "nnunet"
    assert "cannot read" in problems[("case_000_0001.nii.gz", "case_000")]
    assert "label shape 2x12x16 differs from image shape 2x16x16" in problems[("case_001.nii.gz", "case_001")]
    assert "[7] not declared" in problems[("case_002.nii.gz", "case_002")]
    assert "must be integers; found [0.5" in problems[("case_003.nii.gz", "case_003")]
    assert "file not found" in problems[("case_004_0001.nii.gz", "case_004")]
    assert "no label" in problems[("case_005_0000.nii.gz", "case_005")]
    assert "spacing (1.6, 0.9, 2.5) differs" in problems[("case_006.nii.gz", "case_006")]
    assert "channel shape 2x16x20 differs from 2x16x16" in problems[("case_007_0001.nii.gz", "case_007")]
    assert len(report.issues) == 8  # one per broken file, nothing about the healthy files


def test_render_names_every_bad_file_and_require_valid_refuses(broken):
    report = verify_dataset(broken)
    text = report.render()
    for issue in report.issues:
        assert issue.path in text
    with pytest.raises(DatasetError) as err:
        require_valid(report)
    assert "case_002.nii.gz" in str(err.value) and "8 problem(s)" in str(err.value)


def test_report_to_dict_is_json(broken):
    data = json.loads(json.dumps(verify_dataset(broken).to_dict()))
    assert data["ok"] is False and len(data["issues"]) == 8 and data["labels"]["2"] == "zone_b"


def test_loading_refuses_an_inconsistent_case(broken):
    spec = open_dataset(broken)
    with pytest.raises(DatasetError, match=r"case_002.nii.gz: label value\(s\) \[7\]"):
        get_reader("nnunet").load(spec, spec.case("case_002"))


def test_clean_dataset_passes(files):
    report = verify_dataset(files.nnunet(cases=2))
    assert report.ok and report.issues == [] and "OK" in report.render()
    assert require_valid(report) is report


def test_empty_dataset_is_an_issue(files):
    root = files.nnunet(cases=0)
    (root / "imagesTr").mkdir()
    report = verify_dataset(root)
    assert not report.ok and "no cases" in report.issues[0].problem


def test_unrecognised_folder_gives_a_report_not_a_crash(files):
    report = verify_dataset(files.tmp)
    assert (
        not report.ok and report.format is None and "no dataset format recognised" in report.issues[0].problem
    )


def test_non_consecutive_labels_are_an_issue(files):
    report = verify_dataset(files.nnunet(cases=1, labels={"background": 0, "a": 1, "b": 3}))
    assert any("consecutive" in i.problem for i in report.issues)


def test_2d_folder_corrupt_picture_and_size_mismatch_are_named(files):
    root = files.picture_folder(cases=4)
    (root / "image" / "1.png").write_bytes(b"\x89PNG broken")
    files.write_picture(root / "label" / "2.png", np.zeros((10, 16), np.uint8))
    files.write_picture(root / "image" / "3.png", np.zeros((16, 16), np.uint8))  # fine image
    (root / "label" / "3.png").unlink()
    problems = _problems(verify_dataset(root))
    assert set(problems) == {("1.png", "1"), ("2.png", "2"), ("3.png", "3")}
    assert "cannot read" in problems[("1.png", "1")]
    assert "label shape 1x10x16 differs" in problems[("2.png", "2")]
    assert "no label" in problems[("3.png", "3")]


def test_chaos_corrupt_slice_is_named(files):
    root = files.chaos(patients=("1", "2"))
    bad = root / "2" / "DICOM_anon" / "i0001,0000b.dcm"
    bad.write_bytes(b"garbage")
    report = verify_dataset(root)
    assert [(i.path, i.case_id) for i in report.issues if "cannot read DICOM" in i.problem] == [
        (str(bad), "2")
    ]


def _nnunet_with_spacing(root, modality: str, shape=(2, 40, 60), spacing=(0.5, 1.0, 3.0), n=3):
    volumes = []
    for i in range(n):
        label = np.zeros(shape, np.uint8)
        label[:, 10:30, 20:40] = 1
        image = np.where(label > 0, 100.0 + i, -1000.0).astype(np.float32)
        image[0, 10, 20] = 5000.0  # one outlier inside the organ: the 99.5 percentile clips it
        volumes.append((image, label))
    return write_nnunet(root, modality, volumes, [spacing] * n)


def test_the_fingerprint_and_plan_of_a_dataset_of_known_shape_and_spacing(tmp_path):
    report = verify_dataset(_nnunet_with_spacing(tmp_path / "mr", "MRI"))
    assert report.ok
    assert [c.shape for c in report.fingerprint] == [[2, 40, 60]] * 3
    assert report.fingerprint[0].spacing == [1.0, 0.5]  # row (y) and column (x) spacing, mm
    assert report.fingerprint[1].foreground[0]["p50"] == 101.0  # the organ's intensity, background left out
    plan = report.plan
    assert plan.target_spacing == [1.0, 0.5] and plan.working_size == [48, 64]  # 40x60, aspect kept, 16-multiples
    assert plan.normalisation == {"scheme": "zscore"}
    assert "plan: working size 48x64" in report.render()
    assert report.to_dict()["plan"]["working_size"] == [48, 64]

    ct = verify_dataset(_nnunet_with_spacing(tmp_path / "ct", "CT")).plan.normalisation
    assert ct["scheme"] == "ct_foreground"
    low, high = ct["clip"][0]
    assert 100.0 <= low <= 102.0 and high < 5000.0  # the foreground's 0.5/99.5 percentiles, not a fixed window
