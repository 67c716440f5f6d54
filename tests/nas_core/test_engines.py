"""Search and retrain engines on a tiny synthetic phantom: outputs, exact resume, stop, divergence."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nas_core.callbacks import Callbacks, StopRequested, TrainingDiverged
from nas_core.checkpoint import CheckpointError, load_checkpoint, load_model
from nas_core.config import ConfigError, RetrainConfig, SearchConfig
from nas_core.data import make_phantom_dataset
from nas_core.genotype import Genotype
from nas_core.inference import evaluate_checkpoint, predict_paths
from nas_core.retrain import run_retrain
from nas_core.runtime import seed_everything
from nas_core.search import run_search
from nas_core.supernet import SearchNetwork

TINY_SEARCH = dict(epochs=3, warmup_epochs=1, image_size=32, batch_size=2, channels=8, k=2, depth=3, seed=7)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantom", num_cases=6, image_size=32,
                                depth=1, num_classes=3, seed=1)


class StopAfter(Callbacks):
    def __init__(self, epochs: int) -> None:
        self.epochs_seen = 0
        self.limit = epochs
        self.steps = []

    def on_step(self, event) -> None:
        self.steps.append(event)

    def on_epoch(self, record) -> None:
        self.epochs_seen += 1

    def should_stop(self) -> bool:
        return self.epochs_seen >= self.limit


def test_search_writes_genotype_history_and_checkpoint(phantom, tmp_path):
    result = run_search(phantom, SearchConfig(**TINY_SEARCH), tmp_path)
    genotype = Genotype.load(tmp_path / "genotype.json")
    assert genotype == result.genotype and genotype.C == 8 and genotype.depth == 3
    lines = [json.loads(line) for line in (tmp_path / "alphas.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert np.array(lines[-1]["dn"]["alphas"]).shape == (5, 7) and len(lines[-1]["up"]["betas"]) == 5
    # architecture updates start after the warm-up: alphas stay at their initial values in epoch 0
    # (the engine seeds, then builds the supernet: the same two steps give the same initial alphas)
    seed_everything(TINY_SEARCH["seed"])
    initial = SearchNetwork(1, 3, channels=8, depth=3, nodes=2, k=2).arch_state()
    assert lines[0]["dn"]["alphas"] == initial["dn"]["alphas"] and lines[0]["up"] == initial["up"]
    assert lines[0]["metrics"]["train"]["arch_loss"] is None and lines[1]["metrics"]["train"]["arch_loss"] > 0
    assert lines[1]["dn"]["alphas"] != lines[2]["dn"]["alphas"]
    assert 0.0 <= lines[-1]["metrics"]["arch"]["dsc"] <= 1.0
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 3 and state["genotype"] == genotype.to_dict()
    assert state["class_names"][0] == "background" and state["dataset"]["synthetic"] is True


def test_search_resume_reproduces_uninterrupted_run(phantom, tmp_path):
    full = run_search(phantom, SearchConfig(**TINY_SEARCH), tmp_path / "full")
    with pytest.raises(StopRequested):
        run_search(phantom, SearchConfig(**TINY_SEARCH), tmp_path / "cut", callbacks=StopAfter(2))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    resumed = run_search(phantom, SearchConfig(**TINY_SEARCH), tmp_path / "cut", resume=True)
    assert resumed.genotype == full.genotype
    assert len(resumed.history) == len(full.history) == 3
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["metrics"]["train"]["loss"] == pytest.approx(b["metrics"]["train"]["loss"], rel=1e-6)
        for cell in ("dn", "up"):
            np.testing.assert_allclose(a["arch"][cell]["alphas"], b["arch"][cell]["alphas"], rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(a["arch"][cell]["betas"], b["arch"][cell]["betas"], rtol=1e-6, atol=1e-8)
    lines = (tmp_path / "cut" / "alphas.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_resume_refuses_a_changed_configuration(phantom, tmp_path):
    with pytest.raises(StopRequested):
        run_search(phantom, SearchConfig(**TINY_SEARCH), tmp_path, callbacks=StopAfter(1))
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['seed'\]"):
        run_search(phantom, SearchConfig(**{**TINY_SEARCH, "seed": 8}), tmp_path, resume=True)


def test_stop_is_honoured_within_one_step(phantom, tmp_path):
    class StopNow(StopAfter):
        def should_stop(self) -> bool:
            return len(self.steps) >= 1

    cb = StopNow(0)
    with pytest.raises(StopRequested):
        run_search(phantom, SearchConfig(**TINY_SEARCH), tmp_path, callbacks=cb)
    assert len(cb.steps) == 1


def test_progress_events_cover_the_run(phantom, tmp_path):
    cb = StopAfter(99)
    run_search(phantom, SearchConfig(**{**TINY_SEARCH, "epochs": 2}), tmp_path, callbacks=cb)
    assert cb.steps[-1].progress == pytest.approx(1.0)
    assert cb.steps[0].eta_s > 0 and cb.steps[-1].eta_s == pytest.approx(0.0)
    assert cb.epochs_seen == 2


@pytest.mark.parametrize(("field", "value", "message"), [
    ("k", 3, "divide channels=8"), ("epochs", -1, "between 1 and 10000"), ("batch_size", 0, "between 1 and 512"),
    ("image_size", 10**6, "between 16 and 1024"),
])
def test_bad_search_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        SearchConfig(**{**TINY_SEARCH, field: value})
    assert field in info.value.errors


def test_unknown_option_is_refused():
    with pytest.raises(ConfigError, match="unknown option"):
        SearchConfig.from_dict({"epoch": 3})


def test_retrain_genotype_checkpoints_reload_and_reproduce_dsc(phantom, tmp_path):
    genotype = Genotype(C=8, depth=3, nodes=2, dn=(("conv_3x3", 0), ("sep_conv_3x3", 1)) * 2,
                        up=(("skip", 0), ("up_conv", 1)) * 2)
    config = RetrainConfig(epochs=3, image_size=32, batch_size=2, lr=3e-3, seed=3, val_fraction=0.34)
    result = run_retrain(phantom, {"genotype": genotype}, config, tmp_path)
    for name in ("best.pt", "final.pt", "last.pt", "metrics.json"):
        assert (tmp_path / name).exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["architecture"] == "thrifty" and metrics["params"] > 0
    assert set(metrics["best"]["classes"]) == {"organ_1", "organ_2"}
    per_case = metrics["best"]["per_case"]
    assert len(per_case) == 2 and all(set(c["dsc"]) == {"1", "2"} for c in per_case)
    model, meta = load_model(result.best_checkpoint)
    assert meta["architecture"] == {"genotype": genotype.to_dict()} and not model.training
    # the downloaded checkpoint reproduces the stored validation DSC
    val_cases = meta["dataset"]["held_out_cases"]
    val_dir = tmp_path / "val"
    (val_dir / "imagesTr").mkdir(parents=True)
    (val_dir / "labelsTr").mkdir()
    (val_dir / "dataset.json").write_text((phantom / "dataset.json").read_text())
    for case in val_cases:
        for src in (phantom / "imagesTr").glob(f"{case}_*"):
            (val_dir / "imagesTr" / src.name).write_bytes(src.read_bytes())
        (val_dir / "labelsTr" / f"{case}.nii.gz").write_bytes((phantom / "labelsTr" / f"{case}.nii.gz").read_bytes())
    again = evaluate_checkpoint(result.best_checkpoint, val_dir)
    assert again["mean_dsc"] == pytest.approx(metrics["best"]["mean_dsc"], abs=1e-9)


def test_retrain_baseline_and_predict_keeps_geometry(phantom, tmp_path):
    config = RetrainConfig(epochs=1, image_size=32, batch_size=4, seed=0, val_fraction=0.34)
    result = run_retrain(phantom, {"baseline": "unet"}, config, tmp_path)
    assert result.metrics["architecture"] == "unet" and result.metrics["params"] == 7_759_521 + 2 * 33  # 3-class head
    written = predict_paths(result.final_checkpoint, phantom / "imagesTr", tmp_path / "pred")
    assert len(written) == 6
    src = sitk.ReadImage(str(next((phantom / "imagesTr").glob("*.nii.gz"))))
    out = sitk.ReadImage(str(written[0]))
    assert out.GetSize() == src.GetSize() and out.GetSpacing() == pytest.approx(src.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(out))) <= {0, 1, 2}


def test_nan_loss_stops_with_an_actionable_reason(tmp_path):
    root = make_phantom_dataset(tmp_path / "nan", num_cases=4, image_size=32, depth=1, num_classes=2, seed=2)
    config = RetrainConfig(epochs=3, image_size=32, batch_size=2, lr=9.9, val_fraction=0.5)  # absurd lr
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at epoch \d+, step \d+; lower the learning rate"):
        run_retrain(root, {"baseline": "unet"}, config, tmp_path / "out")


def test_search_checkpoint_is_not_a_model(phantom, tmp_path):
    run_search(phantom, SearchConfig(**{**TINY_SEARCH, "epochs": 1}), tmp_path)
    with pytest.raises(CheckpointError, match="retrain its genotype"):
        load_model(tmp_path / "last.pt")


def test_checkpoint_write_is_atomic(tmp_path):
    from nas_core.checkpoint import save_checkpoint

    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"epoch": 2, "w": Boom()}, target)
    assert load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_search_never_sees_the_retrain_validation_cases(phantom):
    from nas_core.pipeline import prepare_retrain_data, prepare_search_data

    search = prepare_search_data(phantom, SearchConfig(image_size=32, seed=5, val_fraction=0.34))
    retrain = prepare_retrain_data(phantom, RetrainConfig(image_size=32, seed=5, val_fraction=0.34))
    searched = set(search.train.case_ids) | set(search.arch.case_ids)
    assert searched == set(retrain.train.case_ids)
    assert searched.isdisjoint(retrain.val.case_ids)
    everything = prepare_search_data(phantom, SearchConfig(image_size=32, seed=5, val_fraction=0.0))
    assert len(everything.train.case_ids) + len(everything.arch.case_ids) == 6


def test_logged_learning_rate_is_the_one_used(phantom, tmp_path):
    config = RetrainConfig(epochs=2, image_size=32, batch_size=4, lr=1e-3, val_fraction=0.34)
    result = run_retrain(phantom, {"baseline": "unet"}, config, tmp_path)
    assert result.history[0]["metrics"]["train"]["lr"] == pytest.approx(1e-3)
    assert result.history[1]["metrics"]["train"]["lr"] == pytest.approx(5e-4)


def test_early_stop_when_the_genotype_stops_changing(phantom, tmp_path):
    # arch_lr=0 freezes alphas and betas, so the derived genotype can never change
    config = SearchConfig(**{**TINY_SEARCH, "epochs": 6, "arch_lr": 0.0, "early_stop_patience": 2})
    result = run_search(phantom, config, tmp_path)
    assert result.stopped_early and result.epochs_run == 4  # warm-up 1 + patience 2 + 1
    assert json.loads((tmp_path / "summary.json").read_text())["stopped_early"] is True


def test_checkpoint_save_removes_temp_files_of_a_killed_writer(tmp_path):
    from nas_core.checkpoint import save_checkpoint

    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint({"epoch": 3}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
