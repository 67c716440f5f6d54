"""The fast paths compute the numbers of the plain ones (shared first steps, folded BatchNorm)."""

from __future__ import annotations

import random

import pytest
import torch

from nas_core.fast import fold_batchnorm
from nas_core.fixed import FixedCell, ThriftyNet
from nas_core.genotype import EDGES_PER_NODE
from nas_core.ops import OPS, Family, build_op
from tests.nas_core.test_search_space import random_genotype


def _plain_cell(cell: FixedCell, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
    """Every edge computing its own upsampling and ReLU, as the op modules say."""
    states = [cell.pre0(in0), cell.pre1(in1)]
    for node in range(cell.nodes):
        idx = range(EDGES_PER_NODE * node, EDGES_PER_NODE * (node + 1))
        states.append(sum(cell.ops[i](states[cell.sources[i]]) for i in idx))
    return cell.fuse(torch.cat(states[2:], dim=1))


def _calibrated(net: torch.nn.Module) -> torch.nn.Module:
    """Running statistics far from the defaults, so folding them has something to fold."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, net.in_channels, 32, 32) * 3 + 1)
    return net


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_shared_first_steps_give_the_plain_cell_outputs(seed, mode):
    torch.manual_seed(seed)
    net = _calibrated(ThriftyNet(random_genotype(random.Random(seed), channels=8, depth=3), 1, 3))
    net.train(mode == "train")
    seen: list[tuple[FixedCell, tuple[torch.Tensor, ...], torch.Tensor]] = []
    cells = [*net.dn_cells, *net.up_cells.values()]
    hooks = [c.register_forward_hook(lambda cell, args, out: seen.append((cell, args, out))) for c in cells]
    with torch.no_grad():
        net(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert len(seen) == len(cells)
    with torch.no_grad():
        for cell, (in0, in1), out in seen:
            assert torch.equal(out, _plain_cell(cell, in0, in1))


@pytest.mark.parametrize("family", list(Family))
def test_folding_batchnorm_keeps_every_op_s_numbers(family):
    torch.manual_seed(0)
    scale = {Family.DN: 2, Family.UP: 1, Family.NODE: 1}[family]
    for name in OPS[family]:
        op = build_op(family, name, 8)
        op.train()
        with torch.no_grad():
            for _ in range(3):
                op(torch.randn(4, 8, 8 * scale, 8 * scale) * 2 + 0.5)
        op.eval()
        x = torch.randn(2, 8, 8 * scale, 8 * scale)
        with torch.no_grad():
            assert torch.allclose(fold_batchnorm(op)(x), op(x), atol=1e-5), name


def test_a_folded_network_predicts_the_same_logits_without_batchnorm_passes():
    torch.manual_seed(0)
    net = _calibrated(ThriftyNet(random_genotype(random.Random(1), channels=8, depth=2), 1, 3)).eval()
    folded = fold_batchnorm(net)
    x = torch.randn(2, 1, 48, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-4)
    assert folded.folded_batchnorms > 10
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.training for m in folded.modules())
    assert net.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # untouched
