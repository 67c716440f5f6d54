"""SliceDataset: whole cases sliced once, per-case slice indices, and an on-disk cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nas_core.data import Augment, DatasetError, SliceDataset, normalisation_for, open_dataset


@pytest.fixture
def spec(files):
    return open_dataset(files.nnunet(cases=3, channels=2, depth=3, size=16))


def _dataset(spec, ids=None, **kwargs):
    kwargs.setdefault("frame", 16)
    kwargs.setdefault("normalisation", normalisation_for(spec.modality))
    return SliceDataset(spec, ids or [c.case_id for c in spec.cases], **kwargs)


def test_items_are_normalised_slices_with_their_case_index(spec, files):
    ds = _dataset(spec, ["case_002", "case_000"])
    assert len(ds) == 6 and ds.case_ids == ["case_002", "case_000"]
    assert (ds.in_channels, ds.num_classes) == (2, 3)
    image, label, case_index = ds[4]
    assert image.shape == (2, 16, 16) and image.dtype == torch.float32
    assert label.shape == (16, 16) and label.dtype == torch.int64 and case_index == 1
    np.testing.assert_array_equal(label.numpy(), files.label(3, 16, 3)[1])
    whole = torch.stack([ds[i][0] for i in ds.slices_of(1)])  # z-score over the whole case
    assert whole[:, 0].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert whole[:, 1].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)


def test_slices_of_lists_each_case_in_order(spec):
    ds = _dataset(spec)
    assert [ds.slices_of(i) for i in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert all(ds[i][2] == 1 for i in ds.slices_of(1))


def test_resizes_to_image_size(spec):
    ds = _dataset(spec, frame=8)
    assert ds[0][0].shape == (2, 8, 8) and ds[0][1].shape == (8, 8)


def test_cache_avoids_decoding_again(spec, tmp_path):
    cache = tmp_path / "cache"
    first = _dataset(spec, cache_dir=cache)
    assert first.decode_count == 3 * 3  # 2 channels + 1 label per case
    second = _dataset(spec, cache_dir=cache)
    assert second.decode_count == 0
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert _dataset(spec, cache_dir=cache, frame=8).decode_count == 9  # other size: other entry
    assert _dataset(spec).decode_count == 9  # no cache: decoded again


def test_editing_a_file_invalidates_only_its_case(spec, tmp_path):
    cache = tmp_path / "cache"
    _dataset(spec, cache_dir=cache)
    label = spec.case("case_001").label_path
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _dataset(spec, cache_dir=cache).decode_count == 3


def test_corrupt_cache_entry_is_decoded_again(spec, tmp_path):
    cache = tmp_path / "cache"
    _dataset(spec, ["case_000"], cache_dir=cache)
    for entry in cache.glob("*.npz"):
        entry.write_bytes(b"junk")
    assert _dataset(spec, ["case_000"], cache_dir=cache).decode_count == 3


def test_augmentation_is_deterministic_per_item_and_epoch(spec):
    ds = _dataset(spec, augment=Augment(elastic=True), seed=3)
    a, b = ds[2], ds[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], a[0])
    assert torch.equal(ds.images[2], _dataset(spec).images[2])  # the stored slices are untouched


@pytest.mark.parametrize("ids, message", [(["nope"], "not in dataset"), ([], "at least one case")])
def test_bad_case_ids_are_refused(spec, ids, message):
    with pytest.raises(DatasetError, match=message):
        SliceDataset(spec, ids, 16, normalisation_for("MR"))


def test_case_without_label_is_refused(files):
    spec = open_dataset(files.promise12())
    with pytest.raises(DatasetError, match="'Case01' has no label"):
        _dataset(spec, ["Case00", "Case01"])


def test_2d_rgb_folder_and_ct_series_feed_the_same_dataset(files):
    ds = _dataset(open_dataset(files.picture_folder(rgb=True)), frame=8)
    assert len(ds) == 3 and ds[0][0].shape == (3, 8, 8) and set(ds.labels.unique().tolist()) == {0, 1}
    ct = _dataset(open_dataset(files.chaos()), frame=8)
    assert len(ct) == 6 and 0.0 <= ct.images.min() and ct.images.max() <= 1.0  # windowed HU
