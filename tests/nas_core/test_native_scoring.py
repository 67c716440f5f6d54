"""Scores on the scan as it is, a test split that chooses nothing, no search/retrain leak, time budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from nas_core import retrain as retrain_module
from nas_core.config import RetrainConfig, SearchConfig
from nas_core.data import SliceDataset, make_phantom_dataset, open_dataset
from nas_core.data.preprocess import Normalisation
from nas_core.data.splits import leaked_cases, plan_split
from nas_core.loop import evaluate, predict_slices
from nas_core.retrain import DataLeak, run_retrain
from nas_core.schedule import RunClock, cosine
from nas_core.search import run_search

H, W, K = 37, 53, 3  # odd, non-square native size


def _native_label(shift: int = 0) -> torch.Tensor:
    """[2, 37, 53]: a 10x20 box of class 1 and a 6x8 box of class 2, moved right by ``shift``."""
    label = torch.zeros((2, H, W), dtype=torch.long)
    label[:, 5:15, 10 + shift : 30 + shift] = 1
    label[:, 20:26, 35 + shift : 43 + shift] = 2
    return label


def _one_hot_at(label: torch.Tensor, size: int) -> torch.Tensor:
    """Logit-like maps [D, K, size, size]: the one-hot label resized to the working size."""
    one_hot = F.one_hot(label, K).permute(0, 3, 1, 2).float()
    return F.interpolate(one_hot, size=(size, size), mode="bilinear", align_corners=False)


class _Volumes:
    """The smallest dataset ``evaluate`` reads: one case, its slices and its native labels."""

    def __init__(self, images: torch.Tensor, native: torch.Tensor) -> None:
        self.case_ids, self.images, self.native_labels = ["case_a"], images, [native]
        self.placements = [None]  # the slices fill the whole frame

    def slices_of(self, case_index: int) -> list[int]:
        return list(range(len(self.images)))

    def __getitem__(self, i: int):
        return self.images[i], torch.zeros(self.images.shape[-2:], dtype=torch.long), 0


def test_logits_return_to_the_scan_size_before_the_argmax() -> None:
    truth = _native_label()
    pred = predict_slices(torch.nn.Identity(), _one_hot_at(truth, 64), torch.device("cpu"), amp=False,
                          out_size=(H, W))
    assert pred.shape == (2, H, W)
    assert torch.equal(pred, truth)


def test_a_perfect_prediction_scores_one_at_native_size() -> None:
    truth = _native_label()
    scores = evaluate(torch.nn.Identity(), _Volumes(_one_hot_at(truth, 64), truth), torch.device("cpu"), K)
    assert scores[0].dsc == {1: 1.0, 2: 1.0}


def test_a_shifted_prediction_scores_what_the_overlap_says() -> None:
    # predicted boxes one pixel to the right: class 1 overlaps 10x19 of 10x20, class 2 6x7 of 6x8
    scores = evaluate(torch.nn.Identity(), _Volumes(_one_hot_at(_native_label(shift=1), 64), _native_label()),
                      torch.device("cpu"), K)
    assert scores[0].dsc[1] == pytest.approx(2 * 2 * 10 * 19 / (2 * 2 * 10 * 20))
    assert scores[0].dsc[2] == pytest.approx(2 * 2 * 6 * 7 / (2 * 2 * 6 * 8))


def _odd_dataset(root: Path, n: int = 4, test: int = 0) -> Path:
    """nnU-Net v2 layout, cases of 37x53x3 (and ``test`` labelled cases in imagesTs/labelsTs)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": n, "file_ending": ".nii.gz"}))
    for i in range(n + test):
        part = "Tr" if i < n else "Ts"
        label = _native_label(shift=i % 3).numpy().astype(np.uint8)
        label = np.concatenate([label, label[:1]])  # 3 slices
        image = label * 100.0 + rng.normal(0, 5, label.shape)
        for folder, array in ((f"images{part}", image.astype(np.float32)), (f"labels{part}", label)):
            (root / folder).mkdir(exist_ok=True)
            name = f"case{i:02d}_0000.nii.gz" if folder.startswith("images") else f"case{i:02d}.nii.gz"
            sitk.WriteImage(sitk.GetImageFromArray(array), str(root / folder / name))
    return root


def test_native_dataset_keeps_each_case_at_its_own_size(tmp_path) -> None:
    spec = open_dataset(_odd_dataset(tmp_path / "odd"))
    ds = SliceDataset(spec, ["case00", "case01"], 16, Normalisation("zscore"), native=True,
                      cache_dir=tmp_path / "cache")
    again = SliceDataset(spec, ["case00", "case01"], 16, Normalisation("zscore"), native=True,
                         cache_dir=tmp_path / "cache")
    assert again.decode_count == 0  # the native labels come from the cache as well
    for d in (ds, again):
        assert d.images.shape[-2:] == (16, 16)
        assert [tuple(t.shape) for t in d.native_labels] == [(3, H, W), (3, H, W)]
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(spec.case("case01").label_path)))
        assert np.array_equal(d.native_labels[1].numpy(), truth)


def test_imagesTs_with_labels_is_a_test_set_apart(tmp_path) -> None:  # noqa: N802
    spec = open_dataset(_odd_dataset(tmp_path / "odd", n=4, test=2))
    assert [c.case_id for c in spec.cases] == ["case00", "case01", "case02", "case03"]
    assert [c.case_id for c in spec.test_cases] == ["case04", "case05"]
    split = plan_split([c.case_id for c in spec.cases], [c.case_id for c in spec.test_cases],
                       val_cases=["case03"], test_cases=["case02"])
    assert split.train == ("case00", "case01") and split.val == ("case03",)
    assert split.test == ("case02", "case04", "case05")


def test_the_test_cases_never_choose_the_best_epoch(tmp_path, monkeypatch) -> None:
    data = _odd_dataset(tmp_path / "odd", n=4, test=1)
    calls: list[list[str]] = []
    real = retrain_module.evaluate

    def spy(model, dataset, *args, **kwargs):
        calls.append(list(dataset.case_ids))
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(retrain_module, "evaluate", spy)
    config = RetrainConfig(epochs=3, image_size=16, batch_size=2, val_cases=("case03",), test_cases=("case02",),
                           device="cpu")
    result = run_retrain(data, {"baseline": "unet"}, config, tmp_path / "out")
    # validation every epoch, the test cases once, after the last epoch, with the best weights
    assert calls == [["case03"]] * 3 + [["case02", "case04"]]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [c["case_id"] for c in metrics["best"]["per_case"]] == ["case03"]
    assert [c["case_id"] for c in metrics["test"]["per_case"]] == ["case02", "case04"]
    val_by_epoch = [h["metrics"]["val"]["dsc"] for h in result.history]
    assert metrics["best_epoch"] == 1 + max(range(3), key=lambda e: (val_by_epoch[e], -e))
    assert metrics["dataset"]["train_cases"] == ["case00", "case01"]


def test_a_retrain_refuses_cases_its_search_chose_with(tmp_path) -> None:
    data = make_phantom_dataset(tmp_path / "phantom", num_cases=6, image_size=16, depth=1, num_classes=2, seed=0)
    search = SearchConfig(epochs=1, warmup_epochs=0, image_size=16, batch_size=2, channels=8, k=2, depth=2,
                          steps_per_epoch=1, device="cpu", seed=0)
    run_search(data, search, tmp_path / "search")
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    searched = summary["search_cases"]
    ids = [c.case_id for c in open_dataset(data).cases]
    assert searched == list(plan_split(ids, seed=0).train)

    other_seed = next(s for s in range(1, 50) if leaked_cases(searched, plan_split(ids, seed=s)))
    leaked = leaked_cases(searched, plan_split(ids, seed=other_seed))
    config = RetrainConfig(epochs=1, image_size=16, batch_size=2, seed=other_seed, device="cpu")
    with pytest.raises(DataLeak, match=leaked[0]):
        run_retrain(data, {"baseline": "unet"}, config, tmp_path / "leak", search_cases=searched)
    assert not (tmp_path / "leak" / "last.pt").exists()  # refused before any training

    from cli.main import app

    genotype = str(tmp_path / "search" / "genotype.json")
    common = ["retrain", "--data", str(data), "--genotype", genotype, "--epochs", "1", "--image-size", "16",
              "--batch-size", "2", "--device", "cpu"]
    refused = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "cli1"), "--seed", str(other_seed)])
    assert refused.exit_code == 2
    assert leaked[0] in refused.output and "seed" in refused.output
    accepted = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "cli2"), "--seed", "0", "--json"])
    assert accepted.exit_code == 0, accepted.output


def test_the_schedule_is_laid_over_the_time_budget() -> None:
    clock = RunClock(epochs=1000, budget_minutes=1.0, spent_s=30.0)
    assert clock.progress(1) == pytest.approx(0.5, abs=0.01)  # half the budget is spent, 0.1% of the epochs
    assert not clock.out_of_time()
    assert RunClock(epochs=1000, budget_minutes=1.0, spent_s=60.0).out_of_time()
    assert RunClock(epochs=4, budget_minutes=None).progress(2) == 0.5
    assert cosine(1.0, 0.0, 0.0) == 1.0 and cosine(1.0, 0.0, 0.5) == pytest.approx(0.5)
    assert cosine(1.0, 0.1, 1.0) == pytest.approx(0.1) and cosine(1.0, 0.0, 2.0) == pytest.approx(0.0)


def test_a_retrain_stops_at_its_budget_with_an_annealed_rate(tmp_path) -> None:
    data = make_phantom_dataset(tmp_path / "phantom", num_cases=4, image_size=16, depth=1, num_classes=2, seed=0)
    config = RetrainConfig(epochs=10_000, image_size=16, batch_size=2, device="cpu", time_budget_minutes=0.05)
    result = run_retrain(data, {"baseline": "unet"}, config, tmp_path / "out")
    metrics = result.metrics
    assert metrics["stopped_by"] == "time_budget" and 1 <= metrics["epochs_run"] < 10_000
    assert 3.0 <= metrics["elapsed_seconds"] < 60.0
    rates = [h["metrics"]["train"]["lr"] for h in result.history]
    assert rates[0] == pytest.approx(1e-3, rel=1e-2) and rates == sorted(rates, reverse=True)
    if len(rates) > 2:
        assert rates[-1] < 0.5e-3  # the schedule ran its course over the budget
    assert (tmp_path / "out" / "best.pt").exists() and (tmp_path / "out" / "final.pt").exists()
    # a resumed run keeps the time it already spent: nothing left, it finishes at once
    again = run_retrain(data, {"baseline": "unet"}, config, tmp_path / "out", resume=True)
    assert again.metrics["epochs_run"] == metrics["epochs_run"]
    assert math.isfinite(again.metrics["elapsed_seconds"])


def test_foreground_oversampling_fills_its_share_of_every_batch(tmp_path) -> None:
    from nas_core.loop import BatchStream

    data = make_phantom_dataset(tmp_path / "phantom", num_cases=4, image_size=16, depth=12, num_classes=2, seed=0)
    spec = open_dataset(data)
    ds = SliceDataset(spec, [c.case_id for c in spec.cases], 16, Normalisation("zscore"))
    foreground = set(ds.foreground_slices())
    assert 0 < len(foreground) < len(ds)  # the phantom has empty slices
    natural = len(foreground) / len(ds)
    seen = {0.0: [], 0.5: []}
    for share in seen:
        for epoch in range(20):
            stream = BatchStream(ds, 4, torch.device("cpu"), torch.Generator().manual_seed(epoch), foreground=share)
            for batch in stream.batches:
                seen[share].append(sum(i in foreground for i in batch) / len(batch))
                if share:
                    assert all(i in foreground for i in batch[2:])  # the last half is forced
    assert np.mean(seen[0.0]) == pytest.approx(natural, abs=0.1)
    assert np.mean(seen[0.5]) >= 0.5 + 0.5 * natural - 0.1


def test_the_search_scores_its_architecture_half_every_n_epochs(tmp_path) -> None:
    data = make_phantom_dataset(tmp_path / "phantom", num_cases=4, image_size=16, depth=1, num_classes=2, seed=0)
    config = SearchConfig(epochs=3, warmup_epochs=1, image_size=16, batch_size=2, channels=8, k=2, depth=2,
                          steps_per_epoch=1, device="cpu", eval_every=2, val_fraction=0)
    result = run_search(data, config, tmp_path / "search")
    scored = [h["metrics"]["arch"]["dsc"] is not None for h in result.history]
    assert scored == [False, True, True]  # epoch 2, then the last
    assert all(h["genotype"] for h in result.history)  # the genotype is still recorded every epoch
    assert result.summary["final_arch_dsc"] == result.history[-1]["metrics"]["arch"]["dsc"]


def test_mirroring_tta_averages_the_four_flips() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    images = torch.randn(2, 1, 8, 10)
    with torch.no_grad():
        expected = sum(conv(images.flip(d) if d else images).flip(d) if d else conv(images)
                       for d in [(), (-1,), (-2,), (-2, -1)]) / 4
        pred = predict_slices(conv, images, torch.device("cpu"), amp=False, tta=True)
    assert torch.equal(pred, expected.argmax(1))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_by_name(name) -> None:
    from nas_core.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(name, model, 0.01, 1e-4)
    if name == "adamw":  # no decay on norm scales and biases
        decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        assert decays == {4: 1e-4, 1: 0.0}
    with pytest.raises(Exception, match="optimizer"):
        RetrainConfig(optimizer="lion")


def test_engines_train_with_nnunet_augmentation(tmp_path) -> None:
    data = make_phantom_dataset(tmp_path / "phantom", num_cases=4, image_size=16, depth=2, num_classes=2, seed=0)
    retrained = run_retrain(data, {"baseline": "unet"}, RetrainConfig(epochs=1, image_size=16, batch_size=2,
                                                                      augmentation="nnunet", device="cpu"),
                            tmp_path / "r")
    assert 0.0 <= retrained.history[0]["metrics"]["train"]["data_wait_fraction"] < 1.0
    searched = run_search(data, SearchConfig(epochs=1, warmup_epochs=0, image_size=16, batch_size=2, channels=8, k=2,
                                             depth=2, steps_per_epoch=1, augmentation="nnunet", device="cpu",
                                             val_fraction=0), tmp_path / "s")
    assert searched.epochs_run == 1


def test_predict_reads_a_case_s_channel_files_together_and_names_masks_as_nnunet(tmp_path) -> None:
    from nas_core.inference import predict_paths

    root = tmp_path / "two"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"},
                                                   "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.zeros((2, H, W), np.uint8)
        label[:, 10:20, 10 + i : 30 + i] = 1
        for c in range(2):
            (root / "imagesTr").mkdir(exist_ok=True)
            image = (label * (50.0 + 10 * c) + rng.normal(0, 3, label.shape)).astype(np.float32)
            sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "imagesTr" / f"case{i}_{c:04d}.nii.gz"))
        (root / "labelsTr").mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(label), str(root / "labelsTr" / f"case{i}.nii.gz"))
    result = run_retrain(root, {"baseline": "unet"}, RetrainConfig(epochs=1, image_size=16, batch_size=2,
                                                                   device="cpu"), tmp_path / "r")
    written = predict_paths(result.best_checkpoint, root / "imagesTr", tmp_path / "masks", tta=True, batch_size=1)
    assert [p.name for p in written] == [f"case{i}.nii.gz" for i in range(4)]  # one mask per case, not per file
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(written[0])))
    assert mask.shape == (2, H, W)  # at the scan's own size
    with pytest.raises(Exception, match="overwrite"):
        single = tmp_path / "single"
        single.mkdir()
        import shutil

        shutil.copy(root / "imagesTr" / "case0_0000.nii.gz", single / "scan.nii.gz")
        predict_paths(result.best_checkpoint, single / "scan.nii.gz", single)


def test_hd95_in_millimetres_where_the_spacing_is_known() -> None:
    from nas_core.metrics import CaseScores, summarise

    truth = torch.zeros((2, H, W), dtype=torch.long)
    truth[:, 10, 10], truth[:, 20, 30] = 1, 2
    shifted = torch.zeros_like(truth)
    shifted[:, 10, 12], shifted[:, 23, 30] = 1, 2  # 2 columns (0.75 mm each), 3 rows (1 mm each)
    scores = CaseScores.compute("c", shifted, truth, K, spacing=[5.0, 1.0, 0.75])
    assert scores.hd95[1] == pytest.approx(1.5) and scores.hd95[2] == pytest.approx(3.0)
    truth, shifted = _native_label(), _native_label(shift=2)
    assert CaseScores.compute("c", truth, truth, K, spacing=[5.0, 1.0, 0.75]).hd95 == {1: 0.0, 2: 0.0}
    assert CaseScores.compute("c", truth, truth, K).hd95 == {}  # no spacing, no distance
    summary = summarise([scores], ["background", "a", "b"])
    assert summary["classes"]["a"]["hd95_mean"] == pytest.approx(1.5)
    assert scores.to_dict()["hd95"] == {"1": pytest.approx(1.5), "2": pytest.approx(3.0)}
    boxes = CaseScores.compute("c", shifted, truth, K, spacing=[5.0, 1.0, 0.75]).hd95
    assert 0 < boxes[1] <= 1.5 + 1e-6  # at most the shift: some boundary points do not move at all


def test_selection_and_report_average_the_same_way() -> None:
    from nas_core.loop import mean_dsc
    from nas_core.metrics import CaseScores, summarise

    # class 2 is absent from both in case b (undefined): the two averagings would differ
    a = CaseScores("a", {1: 0.9, 2: 0.1})
    b = CaseScores("b", {1: 0.5, 2: float("nan")})
    assert mean_dsc([a, b]) == pytest.approx(summarise([a, b], ["bg", "x", "y"])["mean_dsc"])
    assert mean_dsc([a, b]) == pytest.approx((0.7 + 0.1) / 2)
