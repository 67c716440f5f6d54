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
