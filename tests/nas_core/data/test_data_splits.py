"""Case-level splits: deterministic, seeded, never empty, never by slice."""

from __future__ import annotations

import pytest

from nas_core.data import DatasetError, halve, split_cases

IDS = [f"case_{i:02d}" for i in range(10)]


def test_split_is_a_disjoint_cover_of_the_cases():
    train, val = split_cases(IDS, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert set(train).isdisjoint(val) and sorted(train + val) == IDS


def test_split_is_deterministic_and_ignores_input_order():
    assert split_cases(IDS, 0.3, seed=5) == split_cases(list(reversed(IDS)), 0.3, seed=5)


def test_seed_changes_the_split():
    splits = {tuple(split_cases(IDS, 0.3, seed=s)[1]) for s in range(5)}
    assert len(splits) > 1


@pytest.mark.parametrize("n, fraction", [(2, 0.01), (2, 0.99), (3, 0.5), (5, 0.9)])
def test_each_side_gets_at_least_one_case(n, fraction):
    train, val = split_cases(IDS[:n], fraction, seed=1)
    assert train and val and len(train) + len(val) == n


@pytest.mark.parametrize(
    "ids, fraction, message",
    [
        (["only"], 0.2, "at least 2 cases"),
        ([], 0.2, "at least 2 cases"),
        (["a", "a", "b"], 0.2, "unique"),
        (["a", "b"], 1.0, "between 0 and 1"),
    ],
)
def test_bad_inputs_are_refused(ids, fraction, message):
    with pytest.raises(DatasetError, match=message):
        split_cases(ids, fraction)


def test_halve_gives_two_balanced_disjoint_halves():
    a, b = halve(IDS[:7], seed=3)
    assert {len(a), len(b)} == {3, 4} and set(a).isdisjoint(b) and sorted(a + b) == IDS[:7]
    assert halve(IDS[:7], seed=3) == (a, b)
