"""TOPSIS equals an independent textbook implementation (1/x for minimized criteria, vector
normalisation, weights summed to 1, Euclidean distances to ideal and anti-ideal)."""

import numpy as np
import pytest

from catalog.topsis import topsis, topsis_batch


def textbook(matrix: np.ndarray, maximize: list[bool], weights: np.ndarray) -> np.ndarray:
    x = matrix.astype(float).copy()
    for j, mx in enumerate(maximize):
        if not mx:
            x[:, j] = 1.0 / x[:, j]
    r = x / np.sqrt((x ** 2).sum(axis=0))
    w = np.asarray(weights, float) / np.sum(weights)
    v = r * w
    ideal, anti = v.max(axis=0), v.min(axis=0)
    d_plus = np.sqrt(((v - ideal) ** 2).sum(axis=1))
    d_minus = np.sqrt(((v - anti) ** 2).sum(axis=1))
    return d_minus / (d_plus + d_minus)


@pytest.mark.parametrize("seed", range(12))
def test_topsis_matches_textbook(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 400)), int(rng.integers(2, 7))
    matrix = rng.lognormal(0, 1, (n, k)) * rng.uniform(0.1, 1000, k)
    maximize = list(rng.random(k) < 0.5)
    maximize[0], maximize[-1] = True, False  # always mixed objectives
    weights = rng.uniform(0.05, 1, k)
    expected = textbook(matrix, maximize, weights)
    np.testing.assert_allclose(topsis(matrix, maximize, weights), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(topsis_batch(matrix[None], maximize, weights)[0], expected,
                               rtol=0, atol=1e-9)


def test_zero_weights_and_constant_columns_change_nothing():
    rng = np.random.default_rng(1)
    matrix = rng.uniform(1, 10, (50, 3))
    maximize = [True, False, False]
    base = textbook(matrix, maximize, np.array([0.5, 0.3, 0.2]))
    with_const = np.column_stack([matrix, np.full(50, 4.0), np.zeros(50)])
    got = topsis(with_const, maximize + [True, True], [0.5, 0.3, 0.2, 0.7, 0.4])
    np.testing.assert_allclose(got, base, atol=1e-9)
    got = topsis(np.column_stack([matrix, rng.uniform(1, 2, 50)]), maximize + [False],
                 [0.5, 0.3, 0.2, 0.0])
    np.testing.assert_allclose(got, base, atol=1e-9)
    got = topsis_batch(with_const[None], maximize + [True, True], [0.5, 0.3, 0.2, 0.7, 0.4])
    np.testing.assert_allclose(got[0], base, atol=1e-9)


def test_degenerate_groups_score_one():
    assert topsis(np.array([[1.0, 2.0]]), [True, False], [1, 1]).tolist() == [1.0]
    same = np.ones((4, 2))
    assert topsis(same, [True, False], [1, 1]).tolist() == [1.0] * 4
    assert topsis_batch(same[None], [True, False], [1, 1])[0].tolist() == [1.0] * 4


def test_point_and_bootstrap_paths_agree_on_every_shipped_profile():
    """TOPSIS runs two ways: scikit-criteria for the ranking at the operating points, numpy for
    B bootstrap draws at once (topsis_batch: P(#1), P(top 3)). Pinned together on the real
    profiles, so a draw with no noise ranks exactly as the catalog does."""
    from catalog.config import CRITERIA
    from servecat.profiles import load_profiles

    rng = np.random.default_rng(7)
    names = list(CRITERIA)
    matrix = rng.lognormal(0, 1, (300, len(names))) * rng.uniform(0.1, 1000, len(names))
    maximize = [CRITERIA[c] == "max" for c in names]
    for profile in load_profiles():
        weights = [profile.weights.get(c, 0.0) for c in names]
        np.testing.assert_allclose(topsis(matrix, maximize, weights),
                                   topsis_batch(matrix[None], maximize, weights)[0],
                                   rtol=0, atol=1e-9, err_msg=profile.name)
