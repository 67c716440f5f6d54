"""The working frame: aspect ratio and spacing kept from the plan to the scored prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from nas_core.config import RetrainConfig
from nas_core.data import Frame, LoadedCase, Normalisation, SliceDataset, open_dataset
from nas_core.data.frame import frame_for
from nas_core.data.planning import job_frame, normalisation_of, plan_dataset
from nas_core.data.preprocess import normalise, prepare_case, to_native
from nas_core.inference import evaluate_checkpoint, predict_paths
from nas_core.metrics import dice_per_class
from nas_core.retrain import run_retrain
from tests.nas_core.data.conftest import write_nnunet


def test_a_slice_is_resampled_to_the_frame_spacing_and_centred():
    frame = Frame((224, 256), (1.5, 1.5))
    where = frame.place((216, 256), (1.5, 1.5))  # already at the frame's spacing: kept as is
    assert where.resized == (216, 256) and where.offset == (4, 0)
    finer = frame.place((200, 200), (1.0, 1.0))  # 200 px of 1 mm = 133 px of 1.5 mm
    assert finer.resized == (133, 133) and finer.offset == ((224 - 133) // 2, (256 - 133) // 2)


def test_without_spacing_a_slice_fills_the_frame_with_its_aspect_ratio_kept():
    where = Frame((16, 16)).place((20, 40))
    assert where.resized == (8, 16) and where.offset == (4, 0)
    assert Frame((16, 16)).place((8, 8)).resized == (16, 16)  # a square grows to fill a square frame


def test_a_slice_too_large_for_the_frame_shrinks_uniformly():
    where = Frame((64, 64), (1.0, 1.0)).place((100, 50), (1.0, 1.0))
    assert where.resized == (64, 32) and where.offset == (0, 16)


def test_an_image_size_override_coarsens_the_spacing_so_the_median_slice_fits():
    frame = frame_for([224, 256], [1.5, 1.5], 128)
    assert frame.size == (128, 128) and frame.spacing == pytest.approx((3.0, 3.0))
    assert frame.place((216, 256), (1.5, 1.5)).resized == (108, 128)  # 216x256 keeps its 0.84 aspect


def _volumes(root, modality="MRI", cases=((6, 40, 60, (0.5, 1.0, 3.0)), (6, 50, 56, (0.6, 1.2, 3.0)))):
    """Cases of given (D, H, W, spacing (x, y, z)) with an off-centre box."""
    rng = np.random.default_rng(0)
    volumes = []
    for d, h, w, _ in cases:
        label = np.zeros((d, h, w), np.uint8)
        label[:, h // 4: h // 2, w // 5: w // 2] = 1
        volumes.append((label * 200.0 + rng.normal(0, 20, label.shape), label))
    return write_nnunet(root, modality, volumes, [c[3] for c in cases])


def test_the_plan_of_a_job_takes_the_median_spacing_and_keeps_the_aspect_ratio(tmp_path):
    cases = tuple((4, 40, 60, (0.5, 1.0, 3.0)) for _ in range(3)) + ((4, 80, 80, (0.25, 0.5, 3.0)),)
    spec = open_dataset(_volumes(tmp_path / "mr", cases=cases))
    plan = plan_dataset(spec, [c.case_id for c in spec.cases], 4, cache_dir=tmp_path / "cache")
    assert plan.target_spacing == [1.0, 0.5] and plan.working_size == [48, 64]
    assert normalisation_of(plan) == Normalisation("zscore")
    frame = job_frame(plan, None)
    assert frame.size == (48, 64) and frame.spacing == (1.0, 0.5)
    # the finer case (80x80 pixels of 0.5x0.25 mm: 40x20 mm) is resampled to the frame's 1.0x0.5 mm
    assert frame.place((80, 80), (0.5, 0.25)).resized == (40, 40)
    assert list((tmp_path / "cache").glob("plan-*.json"))  # cached: a second job reads it
    assert plan_dataset(spec, [c.case_id for c in spec.cases], 4, cache_dir=tmp_path / "cache") == plan


def test_ct_is_clipped_at_the_foreground_percentiles_then_z_scored(tmp_path):
    root = tmp_path / "ct"
    _volumes(root, modality="CT")
    spec = open_dataset(root)
    norm = normalisation_of(plan_dataset(spec, [c.case_id for c in spec.cases], 4))
    assert norm.scheme == "ct_foreground"
    (low, high), = norm.clip
    assert 120 < low < 200 < high < 280  # the organ's 200 +- 20, not a fixed abdominal window
    out = normalise(np.array([[[[-1000.0, low, high, 5000.0]]]], np.float32), norm)
    assert out[0, 0, 0, 0] == out[0, 0, 0, 1] and out[0, 0, 0, 3] == out[0, 0, 0, 2]  # clipped
    assert abs(normalise(np.full((1, 1, 1, 1), norm.mean[0], np.float32), norm)[0, 0, 0, 0]) < 1e-5
    assert Normalisation.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm  # survives a checkpoint


def test_a_placed_case_returns_to_its_own_size_exactly():
    label = np.zeros((2, 37, 53), np.int64)
    label[:, 5:20, 10:40] = 1
    label[1, 25:30, 3:9] = 2
    case = LoadedCase("c", label[None].astype(np.float32), label, {"spacing": [1.0, 1.0, 2.0]})
    frame = Frame((48, 64), (1.0, 1.0))
    images, labels, where = prepare_case(case, frame, Normalisation("none"))
    assert tuple(images.shape) == (2, 1, 48, 64) and where.resized == (37, 53)
    logits = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # a perfect network's logits
    assert torch.equal(to_native(logits, where, (37, 53)).argmax(1), torch.as_tensor(label))
    assert (labels[:, : where.offset[0]] == 0).all()  # padding is background


def test_a_non_square_case_round_trips_through_train_predict_and_native_scoring(tmp_path):
    data = _volumes(tmp_path / "mr", cases=tuple((4, 40, 60, (0.5, 1.0, 3.0)) for _ in range(4)))
    config = RetrainConfig(epochs=2, batch_size=4, device="cpu", val_cases=("c3",), augmentation="none")
    run_retrain(data, {"baseline": "unet"}, config, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["working_size"] == [48, 64]  # the plan's frame, not a square
    assert metrics["frame"]["spacing"] == [1.0, 0.5]

    masks = predict_paths(tmp_path / "out" / "best.pt", data / "imagesTr", tmp_path / "pred")
    for mask in masks:
        case = mask.name.split(".")[0]
        pred = sitk.ReadImage(str(mask))
        truth = sitk.ReadImage(str(data / "labelsTr" / f"{case}.nii.gz"))
        assert pred.GetSize() == truth.GetSize() == (60, 40, 4) and pred.GetSpacing() == truth.GetSpacing()

    report = evaluate_checkpoint(tmp_path / "out" / "best.pt", data)
    spec = open_dataset(data)
    ds = SliceDataset(spec, ["c3"], Frame.from_dict(metrics["frame"]), Normalisation("zscore"), native=True)
    assert [tuple(t.shape) for t in ds.native_labels] == [(4, 40, 60)]
    per_case = {c["case_id"]: c for c in report["per_case"]}
    pred_c3 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / "c3.nii.gz")))
    dsc = dice_per_class(pred_c3, ds.native_labels[0].numpy(), 2)[1]
    assert per_case["c3"]["dsc"]["1"] == pytest.approx(dsc, abs=1e-6)  # evaluate scores what predict writes
