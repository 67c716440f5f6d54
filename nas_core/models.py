"""One place that turns an architecture spec into a network: a genotype or a baseline name.

An architecture spec is plain data: ``{"genotype": {...}}`` or ``{"baseline": "unet"}``.
Every model is wrapped so that any input size works (pad to a multiple of 2**depth,
crop the logits back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nas_core.genotype import Genotype

DEFAULT_GENOTYPE_PATH = Path(__file__).with_name("default_genotype.json")


def default_genotype() -> Genotype:
    """The project's default genotype (see README: how it was chosen)."""
    return Genotype.load(DEFAULT_GENOTYPE_PATH)


class InvalidArchitecture(ValueError):
    """An architecture spec that names no known model."""


def _build_thrifty(spec: dict[str, Any], in_channels: int, num_classes: int, deep_supervision: bool) -> nn.Module:
    from nas_core.fixed import ThriftyNet

    genotype = spec["genotype"]
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_dict(genotype)
    return ThriftyNet(genotype, in_channels, num_classes, deep_supervision=deep_supervision)


def _build_baseline(spec: dict[str, Any], in_channels: int, num_classes: int, deep_supervision: bool) -> nn.Module:
    from nas_core.baselines import build_baseline

    kwargs = {"deep_supervision": True} if deep_supervision and spec["baseline"] == "unetpp" else {}
    try:
        return build_baseline(spec["baseline"], in_channels, num_classes, **kwargs)
    except ValueError as exc:
        raise InvalidArchitecture(str(exc)) from None


ARCHITECTURES = {"genotype": _build_thrifty, "baseline": _build_baseline}


def size_multiple(model: nn.Module) -> int:
    """The input-size multiple a bare network needs (2**depth)."""
    return getattr(model, "size_multiple", None) or 2 ** getattr(model, "depth", 4)


def build_model(spec: dict[str, Any], in_channels: int, num_classes: int,
                deep_supervision: bool = False, pad: bool = True) -> nn.Module:
    """Build the network an architecture spec describes; wrapped to accept any input size."""
    from nas_core.padding import PadToMultiple

    kinds = [k for k in ARCHITECTURES if k in spec]
    if len(kinds) != 1:
        raise InvalidArchitecture(f"architecture must have exactly one of {sorted(ARCHITECTURES)}, got {sorted(spec)}")
    model = ARCHITECTURES[kinds[0]](spec, in_channels, num_classes, deep_supervision)
    return PadToMultiple(model, size_multiple(model)) if pad else model


def architecture_name(spec: dict[str, Any]) -> str:
    """A short human name: 'unet', 'unetpp' or 'thrifty'."""
    return spec.get("baseline") or "thrifty"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
