"""The Thrifty NAS search space as names, without PyTorch: op families and their candidate ops.

Genotypes name ops by their key in one of the three families; `nas_core.ops` builds its
module registry (`OPS`) from these lists, same keys, same order. The order is the order
of the alpha columns, so never reorder a family (append only, and bump the genotype version).

* ``dn``   - stride-2 edges of DN cells (halve H and W),
* ``up``   - upsampling edges of UP cells (double H and W),
* ``node`` - stride-1 edges (node to node, and the same-resolution input of UP cells).
"""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    DN = "dn"
    UP = "up"
    NODE = "node"


class UnknownOp(ValueError):
    """A genotype or config names an op that its edge family does not have."""


#: Every family's candidate ops, in the order of the alpha columns.
OP_NAMES: dict[Family, tuple[str, ...]] = {
    Family.DN: ("none", "max_pool", "avg_pool", "skip", "conv_3x3", "dil_conv_3x3", "sep_conv_3x3"),
    Family.UP: ("none", "skip", "up_conv", "conv_3x3", "dil_conv_3x3"),
    Family.NODE: ("none", "max_pool_3x3", "avg_pool_3x3", "skip", "conv_3x3", "sep_conv_3x3", "dil_conv_3x3"),
}

#: Pooling ops; a MixedOp follows them with a non-affine BN (PC-DARTS).
POOLING_OPS = frozenset({"max_pool", "avg_pool", "max_pool_3x3", "avg_pool_3x3"})


def op_names(family: Family) -> list[str]:
    """The candidate ops of a family, in the order of the alpha columns."""
    return list(OP_NAMES[family])
