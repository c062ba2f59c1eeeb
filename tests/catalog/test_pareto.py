"""Pareto fronts equal a brute-force O(n²) dominance check, ties and NaNs included."""

import numpy as np
import pytest

from catalog.pareto import pareto_mask, pareto_mask_grouped


def brute(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    c = np.where(maximize, -values, values)
    valid = ~np.isnan(c).any(axis=1)
    out = np.zeros(len(c), bool)
    for i in np.flatnonzero(valid):
        others = c[valid]
        dominated = ((others <= c[i]).all(axis=1) & (others < c[i]).any(axis=1)).any()
        out[i] = not dominated
    return out


@pytest.mark.parametrize("seed", range(30))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 400)), int(rng.integers(1, 6))
    # Small integer grids make many exact ties and duplicate points.
    values = rng.integers(0, int(rng.integers(2, 8)), (n, d)).astype(float)
    maximize = list(rng.random(d) < 0.5)
    assert (pareto_mask(values, maximize) == brute(values, maximize)).all()


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_continuous_and_nan(seed):
    rng = np.random.default_rng(100 + seed)
    values = rng.random((1500, 4))
    values[:, 3] = 2 - values[:, :3].sum(axis=1) / 3 + rng.normal(0, 0.05, 1500)  # big front
    values[rng.random(1500) < 0.03, int(rng.integers(4))] = np.nan
    maximize = [True, False, False, False]
    assert (pareto_mask(values, maximize) == brute(values, maximize)).all()


def test_duplicates_of_a_front_point_are_all_on_it():
    values = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [0.5, 3.0]])
    assert pareto_mask(values, [False, False]).tolist() == [True, True, False, True]


def test_grouped_is_per_group():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 5, (300, 4)).astype(float)
    groups = rng.choice(["a", "b", "c"], 300)
    mask = pareto_mask_grouped(values, [False] * 4, groups)
    for g in "abc":
        rows = groups == g
        assert (mask[rows] == brute(values[rows], [False] * 4)).all()
