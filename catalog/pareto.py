"""Pareto fronts without O(n²) dominance: a sort + sweep in 2-D, a sort-filter skyline beyond.

A point dominates another when it is at least as good on every criterion and better on one, so
identical points never dominate each other and all copies of a front point are on the front.
Rows with a NaN criterion are never on the front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Compare at most this many (front row, candidate row) pairs at once: bounds memory to ~8 MB.
PAIRS = 1 << 22


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of VALUES (n × d); MAXIMIZE says each column's sense."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ValueError(f"values must be n × {len(maximize)}, got shape {values.shape}")
    # Work in "smaller is better" everywhere.
    cost = np.where(np.asarray(maximize, bool), -values, values)
    valid = ~np.isnan(cost).any(axis=1)
    mask = np.zeros(len(cost), bool)
    rows = np.flatnonzero(valid)
    if len(rows):
        mask[rows] = _front(cost[rows])
    return mask


def pareto_mask_grouped(values: np.ndarray, maximize: Sequence[bool],
                        groups: np.ndarray) -> np.ndarray:
    """pareto_mask computed separately within each group (GROUPS: one label per row)."""
    codes, _ = _codes(groups)
    mask = np.zeros(len(codes), bool)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for rows in np.split(order, bounds):  # one iteration per group, not per config
        if len(rows):
            mask[rows] = pareto_mask(np.asarray(values)[rows], maximize)
    return mask


def _codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return codes.ravel(), uniq


def _front(cost: np.ndarray) -> np.ndarray:
    n, d = cost.shape
    if d <= 2:
        # Lexicographic order: a dominator always comes before the point it dominates.
        order = np.lexsort(cost.T[::-1])
        on_front = _sweep_2d(cost[order])
    else:
        # Sort-filter skyline order: by the sum of min-max scaled criteria, ties lexicographic.
        # Dominance implies a smaller-or-equal sum (rounding is monotone), so again a dominator
        # always comes first.
        lo, hi = cost.min(axis=0), cost.max(axis=0)
        score = ((cost - lo) / np.where(hi > lo, hi - lo, 1.0)).sum(axis=1)
        order = np.lexsort((*cost.T[::-1], score))
        on_front = _skyline(cost[order])
    out = np.empty(n, bool)
    out[order] = on_front
    return out


def _sweep_2d(c: np.ndarray) -> np.ndarray:
    if c.shape[1] == 1:
        return c[:, 0] == c[0, 0]
    # Point i is dominated iff an earlier *distinct* point has y ≤ y_i: compare against the
    # running minimum of y over all points before i's run of duplicates.
    new_run = np.ones(len(c), bool)
    new_run[1:] = (c[1:] != c[:-1]).any(axis=1)
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(c)), 0))
    prefix_min = np.concatenate(([np.inf], np.minimum.accumulate(c[:, 1])))
    return ~(prefix_min[run_start] <= c[:, 1])


def _dominated_by(front: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each of ROWS: is some FRONT row ≤ on every criterion and < on one."""
    out = np.zeros(len(rows), bool)
    if not len(front):
        return out
    step = max(1, PAIRS // len(front))
    for start in range(0, len(rows), step):  # chunks of rows bound the pair matrix's memory
        chunk = rows[start:start + step]
        le = np.ones((len(front), len(chunk)), bool)
        lt = np.zeros((len(front), len(chunk)), bool)
        for j in range(front.shape[1]):  # one pass per criterion
            f, r = front[:, j, None], chunk[None, :, j]
            le &= f <= r
            lt |= f < r
        out[start:start + step] = (le & lt).any(axis=0)
    return out


def _skyline(c: np.ndarray) -> np.ndarray:
    """Rounds over rows in dominance-compatible order: the first K live rows, less those
    dominated among themselves, are front rows (their dominators come earlier and are live or
    already dominated by a known front row); they then remove every later row they dominate.
    """
    on_front = np.zeros(len(c), bool)
    alive = np.arange(len(c))
    k = 64
    while len(alive):  # one iteration per round; rounds shrink the live set geometrically
        head, rest = alive[:k], alive[k:]
        found = head[~_dominated_by(c[head], c[head])]
        on_front[found] = True
        alive = rest[~_dominated_by(c[found], c[rest])]
        k = min(2 * k, 2048)
    return on_front
