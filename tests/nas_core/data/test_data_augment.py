"""Augmentation: deterministic given the generator, shapes kept, labels stay class ids."""

from __future__ import annotations

import torch

from nas_core.data import Augment


def _pair(size: int = 32, channels: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.zeros(size, size, dtype=torch.int64)
    label[8:20, 6:14] = 1
    label[20:28, 16:30] = 2
    image = torch.stack([label.float() * (c + 1) for c in range(channels)]) + 0.01 * torch.arange(size)
    return image, label


def _run(aug: Augment, seed: int):
    image, label = _pair()
    return aug(image, label, torch.Generator().manual_seed(seed))


def test_same_generator_seed_same_result_and_different_seed_differs():
    aug = Augment(flip=True, affine=True, elastic=True)
    (a_img, a_lab), (b_img, b_lab) = _run(aug, 7), _run(aug, 7)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    outs = [_run(aug, s)[0] for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_shapes_dtypes_and_label_values_are_kept():
    image, label = _pair()
    for seed in range(5):
        out_img, out_lab = Augment(elastic=True)(image, label, torch.Generator().manual_seed(seed))
        assert out_img.shape == image.shape and out_img.dtype == torch.float32
        assert out_lab.shape == label.shape and out_lab.dtype == torch.int64
        assert set(out_lab.unique().tolist()) <= {0, 1, 2}


def test_flip_only_is_an_exact_mirror_of_image_and_label_together():
    image, label = _pair()
    seen = set()
    for seed in range(12):
        out_img, out_lab = Augment(flip=True, affine=False)(image, label, torch.Generator().manual_seed(seed))
        dims = next(
            d for d in ([], [-1], [-2], [-1, -2]) if torch.equal(out_img, image.flip(d) if d else image)
        )
        assert torch.equal(out_lab, label.flip(dims) if dims else label)
        seen.add(tuple(dims))
    assert len(seen) == 4


def test_no_augmentation_returns_the_input_unchanged():
    image, label = _pair()
    out_img, out_lab = Augment(flip=False, affine=False)(image, label, torch.Generator().manual_seed(0))
    assert torch.equal(out_img, image) and torch.equal(out_lab, label)


def test_affine_moves_image_and_label_together():
    image, label = _pair(channels=1)
    image = label[None].float()
    for seed in range(5):
        out_img, out_lab = Augment(flip=True, affine=True)(image, label, torch.Generator().manual_seed(seed))
        agree = (out_img[0].round().long() == out_lab).float().mean()
        assert agree > 0.95
        assert not torch.equal(out_lab, label)


def _blocks(b: int = 6, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of three classes in blocks; the image shows each class at its own intensity."""
    labels = torch.zeros(b, size, size, dtype=torch.long)
    labels[:, 8:30, 6:20] = 1
    labels[:, 26:44, 24:44] = 2
    return (labels.float() * 10.0 + 5.0)[:, None], labels


def test_batch_augment_moves_image_and_label_together():
    from nas_core.data.batch_augment import BatchAugment

    geometry_only = BatchAugment(p_rotate=1.0, p_scale=1.0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0,
                                 p_low_res=0, p_gamma=0)
    images, labels = _blocks()
    out_img, out_lab = geometry_only(images, labels, torch.Generator().manual_seed(3))
    assert out_img.shape == images.shape and out_lab.shape == labels.shape
    assert not torch.equal(out_lab, labels)  # it did move
    nearest_class = ((out_img[:, 0] - 5.0) / 10.0).round().clamp(0, 2).long()
    agree = (nearest_class == out_lab).float().mean()
    assert agree > 0.97  # only boundary pixels (bilinear vs nearest) may differ
    again = geometry_only(images, labels, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], out_img) and torch.equal(again[1], out_lab)  # the generator decides


def test_batch_augment_keeps_labels_in_the_label_set_and_pads_with_the_border():
    from nas_core.data.batch_augment import BatchAugment

    images, labels = _blocks(b=16)
    images = images + 100.0  # a zero padding would show as values near 0
    out_img, out_lab = BatchAugment(p_rotate=1.0, p_scale=1.0)(images, labels, torch.Generator().manual_seed(0))
    assert set(out_lab.unique().tolist()) <= {0, 1, 2}
    geometric = BatchAugment(p_rotate=1.0, p_scale=1.0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0,
                             p_low_res=0, p_gamma=0, p_mirror=0)(images, labels, torch.Generator().manual_seed(0))
    assert geometric[0].min() >= 100.0 - 1e-4
