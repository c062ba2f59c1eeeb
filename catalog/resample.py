"""Bootstrap every load level's p99 TTFT, p99 TPOT and error rate at once, without sorting.

A resample of a level's n requests (drawn with replacement) is described by how often it draws
each request. With each level's requests sorted by value once, the k-th order statistic of a
resample is the request where the running count of draws passes k: one bincount, one cumsum and
one searchsorted per draw over all levels together, instead of a sort per level and draw.
Percentiles use catalog.confidence's (n + 1)p position over the successful requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from catalog.confidence import CHUNK_ELEMENTS, rng_of

Q = 0.99


@dataclass(frozen=True, slots=True)
class LevelDraws:
    """B bootstrap draws of each level's (p99 TTFT, p99 TPOT, error rate), and its request counts."""

    values: np.ndarray  # (B, L, 3); NaN for every draw of a level without requests
    n: np.ndarray       # (L,) requests of each level in the requests table
    n_ok: np.ndarray    # (L,) of them successful


@dataclass(frozen=True, slots=True)
class _Sorted:
    """One metric's values in a level-major order, ascending inside each level, NaN last."""

    order: np.ndarray   # positions into the level-grouped requests
    values: np.ndarray  # the values in that order
    finite: np.ndarray  # (L,) non-NaN values per level


def level_draws(level_keys: Sequence, requests: pd.DataFrame, draws: int = 200,
                seed: int | np.random.Generator | None = 0, key: str = "config_id") -> LevelDraws:
    """DRAWS resamples of each level's requests (KEY column matches LEVEL_KEYS, in that order)."""
    rng, n_levels = rng_of(seed), len(level_keys)
    row = pd.Index(level_keys).get_indexer(requests[key])
    keep = row >= 0
    level, ok = row[keep], requests["ok"].fillna(False).to_numpy(bool)[keep]
    ttft, tpot = (np.where(ok, _floats(requests, c)[keep], np.nan) for c in ("ttft_ms", "tpot_ms"))
    # Base order: level, then successful requests first, by TTFT (NaN last). TTFT then needs no
    # reordering, and one running count gives both its order statistics and the error rate.
    base = np.lexsort((np.nan_to_num(ttft, nan=np.inf), ~ok, level))
    level, ok, ttft, tpot = level[base], ok[base], ttft[base], tpot[base]
    n = np.bincount(level, minlength=n_levels)
    n_ok = np.bincount(level, weights=ok, minlength=n_levels).astype(int)
    start = np.r_[0, np.cumsum(n)[:-1]]
    out = np.full((draws, n_levels, 3), np.nan)
    total = len(level)
    if not total:
        return LevelDraws(out, n, n_ok)
    first = _Sorted(np.arange(total), ttft, np.bincount(level, weights=~np.isnan(ttft),
                                                         minlength=n_levels).astype(int))
    second = _sort(tpot, level, n_levels)
    has = np.flatnonzero(n > 0)
    slot_start, slot_n = start[level], n[level]
    chunk = max(1, CHUNK_ELEMENTS // total)
    for lo in range(0, draws, chunk):  # one iteration per chunk of draws, not per level
        b = min(chunk, draws - lo)
        offset = total * np.arange(b)[:, None]
        # Each request slot draws one request of its own level: the resample's counts.
        # (u × n rounds up to n for u a hair below 1: clamp.)
        drawn = np.minimum((rng.random((b, total)) * slot_n).astype(np.int64), slot_n - 1)
        pick = slot_start + drawn + offset
        counts = np.bincount(pick.ravel(), minlength=b * total).reshape(b, total)
        cum = np.cumsum(counts, axis=1)
        out[lo:lo + b, :, 0] = percentile_from_counts(cum, first, start, Q)
        out[lo:lo + b, :, 1] = percentile_from_counts(np.cumsum(counts[:, second.order], axis=1),
                                                      second, start, Q)
        ok_drawn = _drawn(cum, start[has], n_ok[has])
        out[lo:lo + b, has, 2] = 1.0 - ok_drawn / n[has]
    return LevelDraws(out, n, n_ok)


def percentile_from_counts(cum: np.ndarray, m: _Sorted, start: np.ndarray,
                           q: float) -> np.ndarray:
    """(B, L) q-quantile of each draw's resample, from the running draw counts CUM (B, N) in
    M's sorted order; matches catalog.confidence.row_percentiles(..., "weibull") on the resample."""
    b, total = cum.shape
    # Draws of NaN values are not in the sample: its size is the draws of the finite values.
    size = _drawn(cum, start, m.finite)
    pos = np.clip((size + 1) * q - 1.0, 0, np.maximum(size - 1, 0))
    below, above = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
    flat = (cum + (total + 1) * np.arange(b)[:, None]).ravel()
    offset = (total + 1) * np.arange(b)[:, None]

    def order_stat(k: np.ndarray) -> np.ndarray:
        at = np.searchsorted(flat, start + k + 1 + offset) - total * np.arange(b)[:, None]
        return m.values[np.clip(at, 0, total - 1)]

    lo, hi = order_stat(below), order_stat(above)
    value = lo + (pos - below) * np.where(above > below, hi - lo, 0.0)
    return np.where(size > 0, value, np.nan)


def _drawn(cum: np.ndarray, start: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(B, L) draws that fell on each level's FIRST requests (in the running count's order)."""
    # Every level draws exactly n picks, so the running count before a level is its start.
    return np.where(first > 0, cum[:, np.maximum(start + first - 1, 0)] - start, 0)


def _sort(values: np.ndarray, level: np.ndarray, n_levels: int) -> _Sorted:
    finite = ~np.isnan(values)
    order = np.lexsort((np.where(finite, values, np.inf), level))
    return _Sorted(order, values[order], np.bincount(level, weights=finite,
                                                     minlength=n_levels).astype(int))


def _floats(frame: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)
