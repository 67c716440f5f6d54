"""The synthetic phantom: readable as nnU-Net, flagged synthetic, valid, and learnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas_core.data import (
    DatasetError,
    SliceDataset,
    make_phantom_dataset,
    normalisation_for,
    open_dataset,
    split_cases,
    verify_dataset,
)


def test_phantom_is_a_valid_synthetic_nnunet_dataset(tmp_path):
    root = make_phantom_dataset(tmp_path / "ph", num_cases=3, image_size=32, num_classes=4, channels=2)
    spec = open_dataset(root)
    assert spec.format == "nnunet" and spec.synthetic and "SYNTHETIC" in spec.name
    assert spec.num_classes == 4 and spec.channel_names == ("SYNTHETIC_MR_0", "SYNTHETIC_MR_1")
    assert spec.modality == "MR" and not spec.is_3d and len(spec.cases) == 3
    report = verify_dataset(root)
    assert report.ok and report.synthetic and "SYNTHETIC" in report.render()
    ds = SliceDataset(spec, [c.case_id for c in spec.cases], 32, normalisation_for(spec.modality))
    for ci in range(3):  # every organ appears in every case
        assert set(ds.labels[ds.slices_of(ci)].unique().tolist()) == {0, 1, 2, 3}


def test_phantom_volumes_and_determinism(tmp_path):
    a = open_dataset(make_phantom_dataset(tmp_path / "a", num_cases=2, image_size=16, depth=4, seed=1))
    b = open_dataset(make_phantom_dataset(tmp_path / "b", num_cases=2, image_size=16, depth=4, seed=1))
    c = open_dataset(make_phantom_dataset(tmp_path / "c", num_cases=2, image_size=16, depth=4, seed=2))
    assert a.is_3d
    norm = normalisation_for("MR")
    ds_a, ds_b, ds_c = (SliceDataset(s, ["phantom_000"], 16, norm) for s in (a, b, c))
    assert len(ds_a) == 4
    assert torch.equal(ds_a.images, ds_b.images) and not torch.equal(ds_a.images, ds_c.images)


def test_phantom_refuses_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match="num_classes"):
        make_phantom_dataset(tmp_path, num_classes=1)


def _dice(pred: torch.Tensor, target: torch.Tensor, k: int) -> float:
    p, t = pred == k, target == k
    return float(2 * (p & t).sum() / max(1, int(p.sum() + t.sum())))


def test_small_net_learns_the_phantom_quickly(tmp_path):
    torch.manual_seed(0)
    spec = open_dataset(make_phantom_dataset(tmp_path / "ph", num_cases=8, image_size=32, num_classes=3))
    train_ids, val_ids = split_cases([c.case_id for c in spec.cases], 0.25, seed=0)
    norm = normalisation_for(spec.modality)
    train, val = SliceDataset(spec, train_ids, 32, norm), SliceDataset(spec, val_ids, 32, norm)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        loss = nn.functional.cross_entropy(net(train.images), train.labels.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(val.images).argmax(1)
    dice = np.mean([_dice(pred, val.labels.long(), k) for k in (1, 2)])
    assert dice > 0.8
