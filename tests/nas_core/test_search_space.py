"""The Thrifty NAS search space: shapes, gradients, partial channels, derivation, genotypes."""

import random

import pytest
import torch

from nas_core.derive import derive, edge_weights
from nas_core.fixed import ThriftyNet
from nas_core.genotype import Genotype, InvalidGenotype
from nas_core.mixed import MixedOp, channel_shuffle
from nas_core.models import default_genotype
from nas_core.ops import OPS, Family, UnknownOp, build_op, op_names
from nas_core.space import OP_NAMES, POOLING_OPS
from nas_core.supernet import SearchNetwork
from nas_core.topology import CellType, cell_edges, edge_family

PARAM_BUDGET = 610_000


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def random_genotype(rng: random.Random, channels: int = 32, depth: int = 4, nodes: int = 2) -> Genotype:
    cells = {}
    for t in CellType:
        entries = []
        for node in range(nodes):
            for src in sorted(rng.sample(range(node + 2), 2)):
                names = [n for n in op_names(edge_family(t, src)) if n != "none"]
                entries.append((rng.choice(names), src))
        cells[t] = tuple(entries)
    return Genotype(C=channels, depth=depth, nodes=nodes, dn=cells[CellType.DN], up=cells[CellType.UP])


@pytest.mark.parametrize(("family", "scale"), [(Family.DN, 0.5), (Family.UP, 2), (Family.NODE, 1)])
@pytest.mark.parametrize("channels", [4, 12])
def test_every_op_resamples_as_its_family_says(family, scale, channels):
    x = torch.randn(2, channels, 8, 8)
    for name in op_names(family):
        y = build_op(family, name, channels)(x)
        assert y.shape == (2, channels, int(8 * scale), int(8 * scale)), name


def test_op_registry_follows_the_torch_free_names_in_their_order():
    assert {f: tuple(OPS[f]) for f in Family} == OP_NAMES  # the order is the order of the alpha columns
    assert all(op_names(f) == list(OP_NAMES[f]) for f in Family)
    assert POOLING_OPS <= {n for f in Family for n in OP_NAMES[f]}


def test_unknown_op_names_family_and_known_ops():
    with pytest.raises(UnknownOp, match=r"'up_conv' is not in the DN family; known: \[.*'sep_conv_3x3'"):
        build_op(Family.DN, "up_conv", 8)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.mark.parametrize("family", list(Family))
def test_partial_channels_only_c_over_k_channels_enter_the_ops(family):
    channels, k = 16, 4
    mixed = MixedOp(family, channels, k)
    seen = []
    for op in mixed.ops:
        op.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    weights = torch.softmax(torch.randn(len(op_names(family))), 0)
    x = torch.randn(2, channels, 8, 8)
    y = mixed(x, weights)
    assert set(seen) == {channels // k}
    convs = [m for m in mixed.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert convs and all(c.in_channels <= channels // k for c in convs)
    # The bypassed channels reach the output untouched but for resampling: perturbing one
    # of them changes exactly one output channel.
    x2 = x.clone()
    x2[:, channels - 1] += 10.0
    changed = (mixed(x2, weights) - y).abs().sum(dim=(0, 2, 3)) > 0
    assert changed.sum().item() == 1


def test_k1_is_plain_darts_all_channels_through_ops():
    mixed = MixedOp(Family.NODE, 8, 1)
    seen = []
    mixed.ops[4].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    mixed(torch.randn(1, 8, 4, 4), torch.softmax(torch.randn(7), 0))
    assert seen == [8]


@pytest.mark.parametrize(("size", "classes", "in_ch", "depth", "nodes", "ds"), [
    (32, 2, 1, 4, 2, False), (64, 3, 2, 4, 2, True), (16, 4, 1, 3, 3, False), (32, 2, 3, 2, 1, False),
])
def test_supernet_shapes(size, classes, in_ch, depth, nodes, ds):
    net = SearchNetwork(in_ch, classes, channels=8, depth=depth, nodes=nodes, k=2, deep_supervision=ds)
    out = net(torch.randn(2, in_ch, size, size))
    heads = out if ds else [out]  # deep supervision trains on every head
    assert len(heads) == (depth if ds else 1) and all(h.shape == (2, classes, size, size) for h in heads)
    assert net.eval()(torch.randn(2, in_ch, size, size)).shape == (2, classes, size, size)
    assert len(net.dn_cells) == depth
    assert len(net.up_cells) == depth * (depth + 1) // 2


def test_supernet_rejects_size_not_multiple_of_grid():
    net = SearchNetwork(1, 2, channels=8, depth=4, k=2)
    with pytest.raises(ValueError, match="multiple of 16"):
        net(torch.randn(1, 1, 40, 40))


def test_gradients_reach_weights_alphas_and_betas_separately():
    net = SearchNetwork(1, 2, channels=8, depth=2, nodes=2, k=2)
    arch_ids = {id(p) for p in net.arch_parameters()}
    weights = list(net.weights())
    assert arch_ids.isdisjoint(id(p) for p in weights)
    assert len(weights) + len(arch_ids) == len(list(net.parameters()))
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 1, 16, 16)), torch.randint(0, 2, (2, 16, 16)))
    loss.backward()
    for p in net.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in weights)


def test_alphas_shared_by_all_cells_of_a_type():
    net = SearchNetwork(1, 2, channels=8, depth=3, nodes=2, k=2)
    assert set(net.alphas) == {"dn", "up"} and set(net.betas) == {"dn", "up"}
    assert net.alphas["dn"].shape == (5, 7) and net.betas["up"].shape == (5,)


def _one_hot_alpha(cell_type: CellType, nodes: int, choice: dict[int, str]) -> torch.Tensor:
    edges = cell_edges(cell_type, nodes)
    alpha = torch.zeros(len(edges), 7)
    for e in edges:
        names = op_names(e.family)
        alpha[e.index, names.index(choice.get(e.index, "none"))] = 5.0
    return alpha


def test_derivation_follows_pc_darts_rule():
    nodes = 2
    # DN edges: node0 <- src0 (e0), src1 (e1); node1 <- src0 (e2), src1 (e3), node0 (e4)
    alpha_dn = _one_hot_alpha(CellType.DN, nodes, {0: "sep_conv_3x3", 1: "conv_3x3", 2: "max_pool",
                                                   3: "dil_conv_3x3", 4: "skip"})
    beta_dn = torch.tensor([0.0, 0.0, -3.0, 1.0, 2.0])  # node1 keeps e3 and e4, drops e2
    alpha_up = _one_hot_alpha(CellType.UP, nodes, {0: "skip", 1: "up_conv", 3: "up_conv", 4: "conv_3x3"})
    alpha_up[2, op_names(Family.NODE).index("none")] = 9.0  # `none` dominates e2: it must lose
    beta_up = torch.zeros(5)
    g = derive({CellType.DN: alpha_dn, CellType.UP: alpha_up}, {CellType.DN: beta_dn, CellType.UP: beta_up},
               channels=16, depth=4, nodes=nodes)
    assert g.dn == (("sep_conv_3x3", 0), ("conv_3x3", 1), ("dil_conv_3x3", 1), ("skip", 2))
    assert g.up == (("skip", 0), ("up_conv", 1), ("up_conv", 1), ("conv_3x3", 2))


def test_edge_weights_are_alpha_softmax_times_node_normalised_beta():
    alpha = torch.randn(5, 7)
    beta = torch.randn(5)
    w = edge_weights(alpha, beta, CellType.DN, 2)
    expected = torch.softmax(alpha[3], 0)[4] * torch.softmax(beta[2:5], 0)[1]
    assert w[3]["conv_3x3"] == pytest.approx(expected.item(), rel=1e-5)
    assert sum(sum(e.values()) for e in w[:2]) == pytest.approx(1.0)  # node 0's two edges
    assert sum(sum(e.values()) for e in w[2:]) == pytest.approx(1.0)  # node 1's three edges


def test_supernet_genotype_is_valid_and_builds():
    net = SearchNetwork(1, 2, channels=8, depth=3, nodes=3, k=2)
    g = net.genotype()
    assert (g.C, g.depth, g.nodes) == (8, 3, 3)
    assert ThriftyNet(g, 1, 2)(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_genotype_json_round_trip():
    g = random_genotype(random.Random(3))
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_dict(g.to_dict()).to_dict() == g.to_dict()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["dn"].__setitem__(0, ["warp_conv", 0]), r"op 'warp_conv' is not in the DN family"),
    (lambda d: d["up"].__setitem__(0, ["up_conv", 0]), r"op 'up_conv' is not in the NODE family used by source 0"),
    (lambda d: d["dn"].__setitem__(1, ["conv_3x3", 2]), r"source 2 is out of range for node 0"),
    (lambda d: d["dn"].__setitem__(2, ["conv_3x3", -1]), r"source -1 is out of range"),
    (lambda d: d["up"].pop(), r"up has 3 entries; 2 nodes need exactly 4"),
    (lambda d: d.__setitem__("version", 7), r"version 7 is not supported"),
    (lambda d: d.pop("nodes"), r"missing field\(s\) \['nodes'\]"),
    (lambda d: d["dn"].__setitem__(0, ["none", 0]), r"op 'none' is not in the DN family"),
    (lambda d: d["dn"].__setitem__(0, "conv_3x3"), r"dn\[0\] = 'conv_3x3' must be \[op_name, source_index\]"),
    (lambda d: d.__setitem__("C", 0), r"C must be an integer >= 1"),
    (lambda d: d["dn"].__setitem__(slice(2, 4), [["conv_3x3", 1], ["skip", 1]]), r"node 1 uses source 1 twice"),
])
def test_invalid_genotypes_name_the_problem(mutate, message):
    d = default_genotype().to_dict()
    mutate(d)
    with pytest.raises(InvalidGenotype, match=message):
        Genotype.from_dict(d)


def test_invalid_json_is_reported():
    with pytest.raises(InvalidGenotype, match="not valid JSON"):
        Genotype.from_json("{'dn': eval('1')}")


@pytest.mark.parametrize(("size", "classes", "in_ch"), [(16, 2, 1), (32, 3, 2), (64, 5, 1)])
def test_derived_net_shapes(size, classes, in_ch):
    g = random_genotype(random.Random(size), channels=8)
    assert ThriftyNet(g, in_ch, classes)(torch.randn(2, in_ch, size, size)).shape == (2, classes, size, size)


def test_default_configuration_derived_nets_stay_within_paper_budget():
    rng = random.Random(0)
    counts = [n_params(ThriftyNet(random_genotype(rng), 1, 1)) for _ in range(40)]
    assert max(counts) <= PARAM_BUDGET
    biggest = Genotype(C=32, depth=4, nodes=2, dn=(("conv_3x3", 0), ("conv_3x3", 1)) * 2,
                       up=(("conv_3x3", 0), ("conv_3x3", 1)) * 2)
    assert n_params(ThriftyNet(biggest, 1, 1)) <= PARAM_BUDGET


def test_every_family_has_none_and_skip():
    for family in Family:
        assert {"none", "skip"} <= set(OPS[family])


@pytest.mark.parametrize("family", list(Family))
@pytest.mark.parametrize("k", [1, 4])
def test_edge_scale_folded_into_mixed_op_equals_scaling_its_output(family, k):
    mixed = MixedOp(family, 8, k).eval()
    x = torch.randn(2, 8, 8, 8)
    weights = torch.softmax(torch.randn(len(op_names(family))), 0)
    scale = torch.tensor(0.37)
    torch.testing.assert_close(mixed(x, weights, scale), scale * mixed(x, weights))


@pytest.mark.parametrize("cell_type", list(CellType))
def test_uniform_architecture_weights_prefer_no_op_family(cell_type):
    from nas_core.derive import edge_score

    nodes = 3
    edges = cell_edges(cell_type, nodes)
    alpha = torch.zeros(len(edges), max(len(op_names(f)) for f in Family))
    weights = edge_weights(alpha, torch.zeros(len(edges)), cell_type, nodes)
    for node in range(nodes):
        incoming = [e for e in edges if e.node == node]
        scores = [edge_score(weights[e.index])[0] for e in incoming]
        assert scores == pytest.approx([1 / len(incoming)] * len(incoming))  # the beta share alone
        if node > 0 and cell_type is CellType.UP:  # families of 5 and 7 ops compete here
            assert len({len(op_names(e.family)) for e in incoming}) == 2


@pytest.mark.parametrize("cell_type", list(CellType))
def test_a_small_lead_on_any_edge_wins_its_node(cell_type):
    nodes = 3
    edges = cell_edges(cell_type, nodes)
    width = max(len(op_names(f)) for f in Family)
    for planted in (e for e in edges if e.node > 0):  # nodes with more than two incoming edges
        alpha = torch.zeros(len(edges), width)
        rivals = [e for e in edges if e.node == planted.node and e is not planted]
        for r in rivals[1:]:  # all rivals but one trail slightly, so exactly one place is contested
            alpha[r.index, : len(op_names(r.family))] = 0.0
            alpha[r.index, op_names(r.family).index("none")] = 0.05
        alpha[planted.index, op_names(planted.family).index("skip")] = 0.1
        cells = {t: torch.zeros(len(cell_edges(t, nodes)), width) for t in CellType}
        cells[cell_type] = alpha
        betas = {t: torch.zeros(len(cell_edges(t, nodes))) for t in CellType}
        g = derive(cells, betas, channels=16, depth=4, nodes=nodes)
        kept = g.cell(cell_type)[2 * planted.node : 2 * planted.node + 2]
        assert ("skip", planted.src) in kept, (planted, kept)
