"""Normalisation maths and slicing/resizing of volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas_core.data import (
    ABDOMEN_WINDOW,
    DatasetError,
    Frame,
    LoadedCase,
    Normalisation,
    normalisation_for,
    normalise,
    prepare_case,
)


def test_ct_window_clips_and_scales_to_unit_range():
    hu = np.array([[[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]]], dtype=np.float32)
    out = normalise(hu, normalisation_for("CT"))
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32


def test_custom_ct_window():
    out = normalise(np.array([[[0.0, 50.0, 100.0]]]), normalisation_for("CT", ct_window=(0.0, 100.0)))
    np.testing.assert_allclose(out.ravel(), [0.0, 0.5, 1.0])


def test_zscore_is_per_channel_over_the_whole_case():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(500, 80, (3, 8, 8)), rng.normal(-2, 0.1, (3, 8, 8))]).astype(np.float32)
    out = normalise(image, normalisation_for("MR"))
    np.testing.assert_allclose(out.reshape(2, -1).mean(axis=1), [0, 0], atol=1e-5)
    np.testing.assert_allclose(out.reshape(2, -1).std(axis=1), [1, 1], atol=1e-4)
    assert out[1, 0].std() != pytest.approx(1.0, abs=1e-3)  # statistics are per case, not per slice


def test_constant_channel_does_not_divide_by_zero():
    out = normalise(np.full((1, 1, 4, 4), 7.0), Normalisation("zscore"))
    assert np.all(np.isfinite(out)) and np.all(out == 0)


@pytest.mark.parametrize(
    "modality, expected",
    [
        ("CT", Normalisation("ct_window", ABDOMEN_WINDOW)),
        ("MR", Normalisation("zscore")),
        ("other", Normalisation("zscore")),
    ],
)
def test_default_per_modality_and_json_round_trip(modality, expected):
    norm = normalisation_for(modality)
    assert norm == expected
    assert Normalisation.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheme": "minmax"}, "unknown normalisation 'minmax'; known"),
        ({"scheme": "ct_window", "window": (240, -160)}, "low < high"),
        ({"scheme": "ct_window"}, "needs window"),
    ],
)
def test_bad_normalisation_is_refused(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        Normalisation(**kwargs)


@pytest.mark.parametrize("shape, size", [((2, 3, 20, 30), 16), ((1, 1, 8, 8), 32), ((3, 2, 16, 16), 16)])
def test_prepare_case_cuts_axial_slices_at_the_requested_size(shape, size):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, shape[1:]).astype(np.int64)
    case = LoadedCase("c", rng.normal(size=shape).astype(np.float32), label, {})
    images, labels, _ = prepare_case(case, Frame((size, size)), Normalisation("zscore"))
    assert tuple(images.shape) == (shape[1], shape[0], size, size) and str(images.dtype) == "torch.float32"
    assert tuple(labels.shape) == (shape[1], size, size) and str(labels.dtype) == "torch.int64"
    assert set(labels.unique().tolist()) <= {0, 1, 2}  # nearest: no in-between class ids


def test_resize_keeps_regions_in_place():
    label = np.zeros((1, 32, 32), dtype=np.int64)
    label[0, :16] = 2
    image = label[None].astype(np.float32) * 10
    images, labels, _ = prepare_case(LoadedCase("c", image, label, {}), Frame((8, 8)), Normalisation("none"))
    assert (labels[0, :4] == 2).all() and (labels[0, 4:] == 0).all()
    assert images[0, 0, :3].mean() == pytest.approx(20.0) and images[0, 0, 5:].mean() == pytest.approx(0.0)


def test_unlabelled_case_gives_no_labels():
    images, labels, _ = prepare_case(
        LoadedCase("c", np.ones((1, 2, 4, 4), np.float32), None, {}), Frame((4, 4)), Normalisation("none")
    )
    assert labels is None and tuple(images.shape) == (2, 1, 4, 4)
