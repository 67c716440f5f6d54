"""The latency-aware search: a measured, cached op table; a differentiable expected latency; budgets."""

from __future__ import annotations

import json

import pytest
import torch

from nas_core.config import SearchConfig
from nas_core.data import make_phantom_dataset
from nas_core.derive import derive, fit_params
from nas_core.genotype import Genotype, InvalidGenotype
from nas_core.latency import LatencyLoss, cost_matrices, expected_latency, latency_table
from nas_core.models import build_model, count_parameters
from nas_core.ops import Family, op_names
from nas_core.search import run_search
from nas_core.topology import CellType, cell_edges, num_alpha_columns

DEPTH, NODES = 2, 2


def test_table_structure_and_cache(tmp_path, monkeypatch) -> None:
    table = latency_table(8, DEPTH, 16, torch.device("cpu"), cache_dir=tmp_path)
    assert set(table) == {f.value for f in Family}
    for family in Family:
        assert list(table[family.value]) == op_names(family)
        for levels in table[family.value].values():
            assert all(ms >= 0 for ms in levels.values())
    assert set(table["dn"]["conv_3x3"]) == {"1", "2"} and set(table["up"]["up_conv"]) == {"0", "1"}
    assert set(table["node"]["skip"]) == {"0", "1", "2"}
    cached = list(tmp_path.glob("latency-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["table"] == table

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr("nas_core.latency.measure_table", must_not_measure)
    assert latency_table(8, DEPTH, 16, torch.device("cpu"), cache_dir=tmp_path) == table
    with pytest.raises(AssertionError, match="measured again"):
        latency_table(8, DEPTH, 32, torch.device("cpu"), cache_dir=tmp_path)  # another size: another table


def _hand_table() -> dict:
    """conv_3x3 costs 10 ms everywhere, every other op 1 ms."""
    levels = {"dn": ["1", "2"], "up": ["0", "1"], "node": ["0", "1", "2"]}
    return {f.value: {op: {lv: (10.0 if op == "conv_3x3" else 1.0) for lv in levels[f.value]}
                      for op in op_names(f)} for f in Family}


def test_the_latency_term_pushes_alphas_toward_cheaper_ops() -> None:
    loss = LatencyLoss(_hand_table(), DEPTH, NODES, weight=1.0, target_ms=None)
    alphas = {t: torch.zeros(len(cell_edges(t, NODES)), num_alpha_columns(t), requires_grad=True) for t in CellType}
    value = loss(alphas)
    assert value.item() == pytest.approx(1.0)  # the target defaults to the uniform-alpha expectation
    value.backward()
    for t in CellType:
        for e in cell_edges(t, NODES):
            names = op_names(e.family)
            grad = alphas[t].grad[e.index, : len(names)]
            conv = names.index("conv_3x3")
            assert grad[conv] > 0 and all(grad[i] < 0 for i in range(len(names)) if i != conv)
    # a step against the gradient lowers the expected latency
    costs = cost_matrices(_hand_table(), DEPTH, NODES)
    stepped = {t: (a - 1.0 * a.grad).detach() for t, a in alphas.items()}
    assert expected_latency(stepped, costs, NODES) < expected_latency(
        {t: a.detach() for t, a in alphas.items()}, costs, NODES)


def _count(g: Genotype) -> int:
    with torch.device("meta"):
        return count_parameters(build_model({"genotype": g}, 1, 2, pad=False))


def test_max_params_is_respected_by_derivation() -> None:
    alphas = {t: torch.zeros(len(cell_edges(t, NODES)), num_alpha_columns(t)) for t in CellType}
    for t in CellType:  # every edge prefers its heaviest op, conv_3x3
        for e in cell_edges(t, NODES):
            alphas[t][e.index, op_names(e.family).index("conv_3x3")] = 3.0
    betas = {t: torch.zeros(len(cell_edges(t, NODES))) for t in CellType}
    g = derive(alphas, betas, channels=16, depth=DEPTH, nodes=NODES)
    full = _count(g)
    budget = int(full * 0.8)
    fitted = fit_params(g, alphas, betas, budget, _count)
    assert _count(fitted) <= budget < full
    assert [src for _, src in fitted.dn] == [src for _, src in g.dn]  # the same edges, cheaper ops
    assert sum(op == "conv_3x3" for op, _ in (*fitted.dn, *fitted.up)) < 8
    with pytest.raises(InvalidGenotype, match="max_params"):
        fit_params(g, alphas, betas, 1_000, _count)


def test_a_latency_aware_search_records_its_table_and_the_found_network_s_cost(tmp_path) -> None:
    data = make_phantom_dataset(tmp_path / "phantom", num_cases=4, image_size=16, depth=1, num_classes=2, seed=0)
    config = SearchConfig(epochs=1, warmup_epochs=0, image_size=16, batch_size=2, channels=8, k=2, depth=DEPTH,
                          steps_per_epoch=1, device="cpu", val_fraction=0, latency_weight=0.5, max_params=20_000)
    result = run_search(data, config, tmp_path / "s", cache_dir=tmp_path / "cache")
    summary = result.summary
    assert summary["genotype_params"] <= 20_000 and summary["genotype_latency_ms"] > 0
    assert summary["latency_objective"]["weight"] == 0.5 and summary["latency_objective"]["expected_ms"] > 0
    assert list((tmp_path / "cache" / "latency").glob("latency-*.json"))


def test_the_table_is_measured_at_the_width_and_size_the_network_will_run_at(tmp_path, monkeypatch) -> None:
    import nas_core.search as search_module

    asked = []
    real = search_module.latency_table

    def spy(channels, depth, size, device, cache_dir=None):
        asked.append((channels, size))
        return real(channels, depth, size, device, cache_dir=cache_dir)

    monkeypatch.setattr(search_module, "latency_table", spy)
    data = make_phantom_dataset(tmp_path / "phantom", num_cases=4, image_size=16, depth=1, num_classes=2, seed=0)
    common = dict(epochs=1, warmup_epochs=0, image_size=16, batch_size=2, channels=8, k=2, depth=DEPTH,
                  steps_per_epoch=1, device="cpu", val_fraction=0, latency_weight=0.5)
    run_search(data, SearchConfig(**common), tmp_path / "own", cache_dir=tmp_path / "cache")
    run_search(data, SearchConfig(**common, latency_channels=12, latency_image_size=32), tmp_path / "retrain",
               cache_dir=tmp_path / "cache")
    assert asked[0][0] == 8 and tuple(asked[0][1]) == (16, 16)  # the search's own width and frame
    assert asked[1] == (12, 32)  # the retrain's
    assert len(list((tmp_path / "cache" / "latency").glob("latency-*.json"))) == 2  # one table per width/size
