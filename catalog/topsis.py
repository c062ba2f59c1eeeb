"""TOPSIS scores: scikit-criteria for the catalog build, a prepared numpy form for query-time weights.

Both compute the same thing: minimized criteria inverted (1/x), each column divided by its
Euclidean norm, weights summed to 1, score = d⁻ / (d⁺ + d⁻) against the ideal (column max) and
anti-ideal (column min). Columns that are constant over the group (all zero included) move no
alternative nearer either pole and are left out; a group where every column is constant scores 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def _inverted(matrix: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(np.asarray(maximize, bool), m, 1.0 / m)


def _informative(inv: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (weights > 0) & (np.ptp(inv, axis=0) > 0) if len(inv) else weights > 0


def topsis(matrix: np.ndarray, maximize: Sequence[bool], weights: Sequence[float]) -> np.ndarray:
    """TOPSIS score in [0, 1] per row of MATRIX (n × k, finite, minimized columns > 0), via
    scikit-criteria's mkpipe(InvertMinimize, VectorScaler, SumScaler(weights), TOPSIS)."""
    import skcriteria as skc
    from skcriteria.agg.topsis import TOPSIS
    from skcriteria.pipelines import mkpipe
    from skcriteria.preprocessing.invert_objectives import InvertMinimize
    from skcriteria.preprocessing.scalers import SumScaler, VectorScaler

    w = np.asarray(weights, dtype=float)
    matrix = np.asarray(matrix, dtype=float)
    keep = _informative(_inverted(matrix, maximize), w)
    if len(matrix) == 0:
        return np.zeros(0)
    if not keep.any():
        return np.ones(len(matrix))
    objectives = [max if mx else min for mx, k in zip(maximize, keep, strict=True) if k]
    pipe = mkpipe(InvertMinimize(), VectorScaler(target="matrix"), SumScaler(target="weights"),
                  TOPSIS())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = skc.mkdm(matrix[:, keep], objectives, weights=w[keep])
        result = pipe.evaluate(dm)
    return np.nan_to_num(np.asarray(result.e_.similarity, dtype=float), nan=1.0)


def topsis_batch(criteria: np.ndarray, maximize: Sequence[bool],
                 weights: Sequence[float]) -> np.ndarray:
    """TOPSIS scores of B draws at once: (B, D, K) criteria -> (B, D), each draw on its own.

    Rows with a NaN criterion in a draw are left out of that draw's norms and poles and score NaN;
    the scores of the others equal topsis() on the remaining rows.
    """
    inv = _inverted(criteria, maximize)
    inv = np.where(np.isfinite(inv).all(axis=-1, keepdims=True), inv, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw where no row is usable
        norm = np.sqrt(np.nansum(inv ** 2, axis=1, keepdims=True))
        r = np.where(norm > 0, inv / norm, 0.0)
        r = np.where(np.isnan(inv), np.nan, r)
        w2 = np.asarray(weights, dtype=float) ** 2
        d_best = np.sqrt(((r - np.nanmax(r, axis=1, keepdims=True)) ** 2) @ w2)
        d_worst = np.sqrt(((r - np.nanmin(r, axis=1, keepdims=True)) ** 2) @ w2)
        total = d_best + d_worst
        return np.where(np.isnan(total), np.nan, np.where(total > 0, d_worst / total, 1.0))
