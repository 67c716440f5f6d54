"""One place that turns an architecture spec into a network: a genotype or a baseline name.

An architecture spec is plain data: ``{"genotype": {...}}`` or ``{"baseline": "unet"}``.
Every model is wrapped so that any input size works (pad to a multiple of 2**depth,
crop the logits back).
"""

from __future__ import annotations

from pathlib import Path

from nas_core.genotype import Genotype

DEFAULT_GENOTYPE_PATH = Path(__file__).with_name("default_genotype.json")


def default_genotype() -> Genotype:
    """The project's default genotype (see README: how it was chosen)."""
    return Genotype.load(DEFAULT_GENOTYPE_PATH)
