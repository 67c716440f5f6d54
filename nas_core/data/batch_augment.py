"""nnU-Net's 2D augmentation, batched on tensors: one call per batch, on the batch's device.

The transforms and their probabilities follow nnU-Net v2's default training pipeline
(``nnUNetTrainer.get_training_transforms``): rotation and scaling (each with probability
0.2), Gaussian noise (0.1), Gaussian blur (0.2), brightness (0.15), contrast (0.15),
simulated low resolution (0.25), gamma (0.3, inverted 0.1 of the time), mirroring (0.5 per
axis). Geometry moves image and label with one sampling grid per sample: bilinear with the
image's own border values for the image, nearest for the label (no new class ids). Every
draw comes from the ``torch.Generator`` passed in, so a batch's augmentation depends only on
it. Running once per batch (not once per sample in Python) keeps the data wait small on CPU
and puts the work on the GPU when training runs there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _chance(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


@dataclass(frozen=True)
class BatchAugment:
    """Call on (images [B, C, H, W], labels [B, H, W], generator) -> the same shapes."""

    p_rotate: float = 0.2
    rotate_deg: float = 180.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_var: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_low_res: float = 0.25
    low_res: tuple[float, float] = (0.5, 1.0)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_gamma_inverted: float = 0.1
    p_mirror: float = 0.5
    batched: bool = True  # BatchStream calls it once per batch

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.spatial(images.float(), labels, g)
        images = self.intensity(images, g)
        return self.mirror(images, labels, g)

    # -- geometry ----------------------------------------------------------------------
    def spatial(self, images: torch.Tensor, labels: torch.Tensor,
                g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        angle = torch.where(_chance(b, self.p_rotate, g),
                            _uniform(b, -self.rotate_deg, self.rotate_deg, g) * math.pi / 180, torch.zeros(b))
        zoom = torch.where(_chance(b, self.p_scale, g), _uniform(b, *self.scale, g), torch.ones(b))
        moved = (angle != 0) | (zoom != 1)
        if not bool(moved.any()):
            return images, labels
        idx = torch.nonzero(moved).flatten()
        cos, sin = torch.cos(angle[idx]) / zoom[idx], torch.sin(angle[idx]) / zoom[idx]
        theta = torch.zeros(len(idx), 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        theta = theta.to(images.device)
        grid = F.affine_grid(theta, [len(idx), 1, *images.shape[-2:]], align_corners=False)
        images, labels = images.clone(), labels.clone()
        images[idx] = F.grid_sample(images[idx], grid, mode="bilinear", padding_mode="border",
                                    align_corners=False)
        moved_labels = F.grid_sample(labels[idx, None].float(), grid, mode="nearest", padding_mode="zeros",
                                     align_corners=False)
        labels[idx] = moved_labels[:, 0].round().to(labels.dtype)
        return images, labels

    def mirror(self, images: torch.Tensor, labels: torch.Tensor,
               g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        for dim in (-1, -2):
            flip = _chance(b, self.p_mirror, g).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(dim), images)
            labels = torch.where(flip[:, None, None], labels.flip(dim), labels)
        return images, labels

    # -- intensities -------------------------------------------------------------------
    def intensity(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, dev = x.shape[0], x.device

        def per_sample(values: torch.Tensor) -> torch.Tensor:
            return values.to(dev).view(b, 1, 1, 1)

        noise = _chance(b, self.p_noise, g)
        if bool(noise.any()):
            std = per_sample(torch.sqrt(_uniform(b, *self.noise_var, g)) * noise)
            x = x + torch.randn(x.shape, generator=g).to(dev) * std
        blur = _chance(b, self.p_blur, g)
        sigmas = _uniform(b, *self.blur_sigma, g)
        for i in torch.nonzero(blur).flatten().tolist():
            x[i] = _gaussian_blur(x[i], float(sigmas[i]))
        bright = torch.where(_chance(b, self.p_brightness, g), _uniform(b, *self.brightness, g), torch.ones(b))
        x = x * per_sample(bright)
        contrast = _chance(b, self.p_contrast, g)
        factor = _uniform(b, *self.contrast, g)
        if bool(contrast.any()):
            mean = x.mean(dim=(-2, -1), keepdim=True)
            low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
            stretched = torch.minimum(torch.maximum((x - mean) * per_sample(factor) + mean, low), high)
            x = torch.where(per_sample(contrast), stretched, x)
        low_res = _chance(b, self.p_low_res, g)
        zoom = _uniform(b, *self.low_res, g)
        for i in torch.nonzero(low_res).flatten().tolist():
            size = x.shape[-2:]
            small = [max(1, round(s * float(zoom[i]))) for s in size]
            down = F.interpolate(x[i : i + 1], size=small, mode="nearest")
            x[i] = F.interpolate(down, size=tuple(size), mode="bicubic", align_corners=False)[0]
        gamma = _chance(b, self.p_gamma, g)
        inverted = _chance(b, self.p_gamma_inverted, g)
        exponent = _uniform(b, *self.gamma, g)
        for i in torch.nonzero(gamma).flatten().tolist():
            x[i] = _gamma(x[i], float(exponent[i]), bool(inverted[i]))
        return x


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """[C, H, W] blurred with a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, -1)
    c = image.shape[0]
    x = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def _gamma(image: torch.Tensor, exponent: float, inverted: bool) -> torch.Tensor:
    """nnU-Net's gamma: on the image rescaled to [0, 1], mean and std restored afterwards."""
    x = -image if inverted else image
    mean, std = x.mean(), x.std()
    low, high = x.min(), x.max()
    span = (high - low).clamp_min(1e-7)
    x = ((x - low) / span) ** exponent * span + low
    x = (x - x.mean()) / x.std().clamp_min(1e-7) * std + mean
    return -x if inverted else x
