"""nnU-Net's conventions: datasets by name or id under $nnUNet_raw, and its splits_final.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas_core.config import RetrainConfig, SearchConfig
from nas_core.data import DatasetError, open_dataset
from nas_core.data.readers import resolve_dataset_path
from nas_core.data.splits import fold_val_cases, leaked_cases, split_for


@pytest.fixture
def raw(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "nnUNet_raw"
    for name in ("Dataset003_ACDC", "Dataset027_Prostate", "Dataset104_Liver"):
        (root / name).mkdir(parents=True)
    (root / "notes").mkdir()
    monkeypatch.setenv("nnUNet_raw", str(root))
    return root


@pytest.mark.parametrize("value", ["Dataset003_ACDC", "3", "003", " 3 "])
def test_a_name_or_an_id_finds_the_folder(raw, value):
    assert resolve_dataset_path(value) == raw / "Dataset003_ACDC"


def test_three_digit_ids_are_matched_exactly(raw):
    assert resolve_dataset_path("104") == raw / "Dataset104_Liver"
    assert resolve_dataset_path("27") == raw / "Dataset027_Prostate"


def test_an_existing_path_wins_over_an_id(raw, tmp_path, monkeypatch):
    (tmp_path / "3").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset_path("3") == Path("3")


def test_other_values_come_back_unchanged(raw):
    assert resolve_dataset_path("/does/not/exist") == Path("/does/not/exist")
    assert resolve_dataset_path("my_data") == Path("my_data")


def test_no_match_names_what_was_looked_for_and_what_is_there(raw):
    with pytest.raises(DatasetError) as err:
        resolve_dataset_path("5")
    message = str(err.value)
    assert "Dataset005_*" in message and str(raw) in message and "nnUNet_raw" in message
    assert "Dataset003_ACDC, Dataset027_Prostate, Dataset104_Liver" in message and "notes" not in message
    with pytest.raises(DatasetError, match=r"looked for nnUNet_raw/Dataset003_Heart"):
        resolve_dataset_path("Dataset003_Heart")


def test_two_folders_with_one_id_are_ambiguous(raw):
    (raw / "Dataset003_ACDCv2").mkdir()
    both = r"ambiguous: 2 folders match .*\(Dataset003_ACDC, Dataset003_ACDCv2\)"
    with pytest.raises(DatasetError, match=both):
        resolve_dataset_path("3")
    assert resolve_dataset_path("Dataset003_ACDCv2") == raw / "Dataset003_ACDCv2"  # the full name still works


def test_an_id_without_nnunet_raw_says_to_set_it(monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(DatasetError, match="nnUNet_raw is not set"):
        resolve_dataset_path("3")


# --- splits_final.json ------------------------------------------------------------------------------------

FOLDS = [{"train": ["phantom_002", "phantom_003", "phantom_004", "phantom_005"],
          "val": ["phantom_000", "phantom_001"]},
         {"train": ["phantom_000", "phantom_001", "phantom_004", "phantom_005"],
          "val": ["phantom_002", "phantom_003"]}]


@pytest.fixture
def phantom(tmp_path, monkeypatch) -> Path:
    from nas_core.data import make_phantom_dataset

    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    return make_phantom_dataset(tmp_path / "Dataset009_Phantom", num_cases=6, image_size=16, depth=1,
                                num_classes=2)


def test_without_splits_final_the_seeded_split_is_unchanged(phantom):
    spec = open_dataset(phantom)
    split = split_for(spec, RetrainConfig())
    assert fold_val_cases(phantom) is None and len(split.val) == 1  # round(6 * 0.2) seeded cases


def test_fold_0_of_splits_final_validates_by_default(phantom):
    (phantom / "splits_final.json").write_text(json.dumps(FOLDS))
    spec = open_dataset(phantom)
    split = split_for(spec, RetrainConfig())
    assert split.val == ("phantom_000", "phantom_001")
    assert split.train == ("phantom_002", "phantom_003", "phantom_004", "phantom_005")
    # the search plans the same way, so a retrain on its split leaks nothing (the API's check agrees)
    assert split_for(spec, SearchConfig()).val == split.val
    assert leaked_cases(split_for(spec, SearchConfig()).train, split) == []
    # explicit choices still win: val_cases, and val_fraction 0 (every case trains)
    assert split_for(spec, RetrainConfig(val_cases=("phantom_005",))).val == ("phantom_005",)
    assert split_for(spec, SearchConfig(val_fraction=0)).val == ()
    assert fold_val_cases(phantom, 1) == ["phantom_002", "phantom_003"]


def test_splits_final_in_nnunet_preprocessed_is_found(phantom, tmp_path, monkeypatch):
    pre = tmp_path / "nnUNet_preprocessed"
    (pre / phantom.name).mkdir(parents=True)
    (pre / phantom.name / "splits_final.json").write_text(json.dumps(FOLDS))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    assert split_for(open_dataset(phantom), RetrainConfig()).val == ("phantom_000", "phantom_001")


def test_a_test_case_in_the_fold_stays_a_test_case(phantom):
    (phantom / "splits_final.json").write_text(json.dumps(FOLDS))
    split = split_for(open_dataset(phantom), RetrainConfig(test_cases=("phantom_001",)))
    assert split.val == ("phantom_000",) and split.test == ("phantom_001",)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot read"),
    (json.dumps({"train": [], "val": []}), "list of folds"),
    (json.dumps([{"train": [], "val": ["phantom_000", "nobody_042"]}]),
     r"names validation case\(s\) \['nobody_042'\]"),
])
def test_a_bad_splits_final_is_named(phantom, content, message):
    (phantom / "splits_final.json").write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        split_for(open_dataset(phantom), RetrainConfig())
    assert "splits_final.json" in str(err.value)


def test_a_missing_fold_says_how_many_there_are(phantom):
    (phantom / "splits_final.json").write_text(json.dumps(FOLDS))
    with pytest.raises(DatasetError, match=r"has 2 fold\(s\) \(0 to 1\); there is no fold 5"):
        fold_val_cases(phantom, 5)
