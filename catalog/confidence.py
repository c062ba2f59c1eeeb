"""Confidence: intervals of a level's percentiles, of a capacity, and of a deployment's rank.

Percentiles use np.percentile's linear rule over the successful requests, as bench's summary
does. Intervals are percentile-bootstrap by default (B resamples as one B × n index matrix from
a seeded numpy Generator); `method="order"` gives the exact distribution-free interval between
two order statistics (binomial), which never under-covers and says when the data cannot bound
a high percentile from above (hi = inf).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from catalog.capacity import at_crossing, capacity, crossing, prepare, quantities, slo_values
from servecat.slo import Slo

PERCENTILES = (50.0, 90.0, 95.0, 99.0)
FEW_REQUESTS = 20           # below this a high percentile is the sample max (marked at_max)
CHUNK_ELEMENTS = 4_000_000  # resampled values held at once (32 MB of float64)
# The percentile position inside bootstrap resamples. (n + 1)p is unbiased for F(x); the linear
# (n − 1)p sits low in the tail. Coverage of the true p99 by the 95% percentile-bootstrap interval,
# 1,000 seeded repeats, exponential and lognormal, n = 300 and 500: 94-95% with (n + 1)p, 84-89%
# with (n − 1)p. The exact order-statistic interval (method="order") covers 97-99%.
BOOTSTRAP_POSITION = "weibull"


@dataclass(frozen=True, slots=True)
class PercentileInterval:
    """A percentile of one level's requests: estimate, interval at `level`, n and method."""

    q: float
    estimate: float
    lo: float
    hi: float
    n: int
    level: float
    method: str
    at_max: bool  # few requests: the estimate is their max and nothing bounds it above
    note: str


@dataclass(frozen=True, slots=True)
class CapacityInterval:
    """A capacity (req/s and concurrency) with its bootstrap interval over the levels' requests."""

    rps: float
    rps_lo: float
    rps_hi: float
    concurrency: float
    concurrency_lo: float
    concurrency_hi: float
    level: float
    draws: int
    share_none: float         # draws in which even the lowest level missed (counted as 0 req/s)
    share_lower_bound: float  # draws in which every level held (their capacity is a lower bound)
    note: str


def rng_of(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def row_percentiles(sorted_rows: np.ndarray, q: Sequence[float],
                    position: str = "linear") -> np.ndarray:
    """Percentiles of each row of an ascending-sorted (B, n) array, NaNs (last) ignored.

    POSITION "linear" is np.percentile's (n − 1)p; "weibull" is (n + 1)p, clamped to the sample.
    """
    q = np.asarray(q, dtype=float)
    m = (~np.isnan(sorted_rows)).sum(axis=1)[:, None]
    if position == "linear":
        pos = np.maximum(m - 1, 0) * q[None, :] / 100.0
    elif position == "weibull":
        pos = np.clip((m + 1) * q[None, :] / 100.0 - 1.0, 0, np.maximum(m - 1, 0))
    else:
        raise ValueError(f"position {position!r} is not one of linear, weibull")
    below = np.floor(pos).astype(int)
    above = np.ceil(pos).astype(int)
    lo = np.take_along_axis(sorted_rows, below, axis=1)
    hi = np.take_along_axis(sorted_rows, above, axis=1)
    out = lo + (pos - below) * np.where(above > below, hi - lo, 0.0)
    return np.where(m > 0, out, np.nan)


def resample_percentiles(values: np.ndarray, q: Sequence[float], draws: int = 2000,
                         seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """(draws, len(q)) percentiles of DRAWS resamples (with replacement) of VALUES; NaN ignored.

    Resamples use the (n + 1)p position: the linear rule's (n − 1)p sits low in the tail, and a
    percentile bootstrap built on it under-covers high percentiles (see BOOTSTRAP_POSITION).
    """
    values = np.asarray(values, dtype=float)
    rng, n = rng_of(seed), len(values)
    out = np.full((draws, len(q)), np.nan)
    if n == 0:
        return out
    chunk = max(1, CHUNK_ELEMENTS // n)  # bounds memory for levels with many requests
    for start in range(0, draws, chunk):
        idx = rng.integers(0, n, size=(min(chunk, draws - start), n))
        out[start:start + len(idx)] = row_percentiles(np.sort(values[idx], axis=1), q,
                                                      BOOTSTRAP_POSITION)
    return out


def order_statistic_ranks(n: int, q: float, level: float = 0.95) -> tuple[int, int]:
    """1-based ranks (l, u) with P(x_(l) <= true q-th percentile < x_(u)) >= LEVEL.

    The count of samples below the true percentile is Binomial(n, q/100); l = 0 or u = n + 1
    means that side is not bounded by the data.
    """
    p, tail = q / 100.0, (1.0 - level) / 2.0
    k = np.arange(n + 1)
    with np.errstate(divide="ignore"):
        log_choose = np.concatenate([[0.0], np.cumsum(np.log(n - k[1:] + 1) - np.log(k[1:]))])
        log_pmf = log_choose + k * np.log(p) + (n - k) * np.log1p(-p)
    cdf = np.cumsum(np.exp(log_pmf))  # cdf[j] = P(count <= j)
    low = np.flatnonzero(cdf[:n] <= tail)     # x_(l) > truth needs count <= l - 1
    high = np.flatnonzero(cdf[:n] >= 1 - tail)  # x_(u) < truth needs count >= u
    return (int(low[-1]) + 1 if len(low) else 0), (int(high[0]) + 1 if len(high) else n + 1)


def percentile_interval(values: Any, q: float = 99.0, level: float = 0.95, draws: int = 2000,
                        seed: int | np.random.Generator | None = 0,
                        method: str = "bootstrap") -> PercentileInterval:
    """The q-th percentile of VALUES (NaN = failed, ignored) with its interval and n."""
    return _intervals(np.asarray(values, dtype=float), [q], level, draws, rng_of(seed), method)[0]


def percentile_intervals(requests: pd.DataFrame, by: str = "config_id",
                         metrics: Sequence[str] = ("ttft_ms", "tpot_ms"),
                         q: Sequence[float] = PERCENTILES, level: float = 0.95,
                         draws: int = 2000, seed: int | np.random.Generator | None = 0,
                         method: str = "bootstrap") -> pd.DataFrame:
    """One row per level (BY) × metric × percentile of successful requests: estimate, lo, hi, n."""
    rng = rng_of(seed)
    ok = requests["ok"].fillna(False).to_numpy(bool) if "ok" in requests else None
    table = requests[ok] if ok is not None else requests
    rows = []
    for key, part in table.groupby(by, sort=True):  # one resample matrix per level and metric
        for metric in metrics:
            values = pd.to_numeric(part[metric], errors="coerce").to_numpy(float, na_value=np.nan)
            for iv in _intervals(values, q, level, draws, rng, method):
                rows.append({by: key, "metric": metric, "q": iv.q, "estimate": iv.estimate,
                             "lo": iv.lo, "hi": iv.hi, "n": iv.n, "level": iv.level,
                             "method": iv.method, "at_max": iv.at_max, "note": iv.note})
    return pd.DataFrame(rows)


def _intervals(values: np.ndarray, q: Sequence[float], level: float, draws: int,
               rng: np.random.Generator, method: str) -> list[PercentileInterval]:
    if method not in ("bootstrap", "order"):
        raise ValueError(f"method {method!r} is not one of bootstrap, order")
    v = np.sort(values[~np.isnan(values)])
    n, tail = len(v), (1.0 - level) / 2.0
    if n == 0:
        return [PercentileInterval(x, np.nan, np.nan, np.nan, 0, level, method, False,
                                   "no successful requests") for x in q]
    estimates = np.percentile(v, q)
    if method == "bootstrap":
        bounds = np.quantile(resample_percentiles(v, q, draws, rng), [tail, 1 - tail], axis=0)
    else:
        ranks = [order_statistic_ranks(n, x, level) for x in q]
        bounds = np.array([[v[lo - 1] if lo > 0 else -np.inf for lo, _ in ranks],
                           [v[hi - 1] if hi <= n else np.inf for _, hi in ranks]])
    out = []
    for i, x in enumerate(q):
        estimate, lo, hi, note = float(estimates[i]), float(bounds[0, i]), float(bounds[1, i]), ""
        # With few requests a high percentile interpolates between the top two: call it the max,
        # and say that nothing in the data bounds the true percentile from above.
        at_max = n < FEW_REQUESTS and (n - 1) * x / 100.0 > n - 2
        if at_max:
            estimate, hi = float(v[-1]), np.inf
            note = f"p{x:g} of only {n} requests is their max; not bounded above"
        elif not np.isfinite(hi):
            note = f"p{x:g}: {n} requests cannot bound it above at {level:.0%}"
        out.append(PercentileInterval(x, estimate, lo, hi, n, level, method, at_max, note))
    return out


def capacity_draws(levels: pd.DataFrame, requests: pd.DataFrame, slo: Any, draws: int = 1000,
                   seed: int | np.random.Generator | None = 0,
                   key: str = "config_id") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(req/s, concurrency, levels held) of the capacity in each of DRAWS bootstrap draws.

    Each draw resamples every level's requests (ok or not) and recomputes its p99 TTFT, p99 TPOT
    and error rate; a level without requests in REQUESTS keeps its summary's values.
    """
    slo, rng = Slo.of(slo), rng_of(seed)
    kind, levels = prepare(levels)
    fixed = slo_values(levels)
    values = np.broadcast_to(fixed, (draws, *fixed.shape)).copy()
    by_level = {k: g for k, g in requests.groupby(key, sort=False)}
    for i, level_key in enumerate(levels[key]):
        part = by_level.get(level_key)
        if part is None or not len(part):
            continue
        values[:, i] = _resample_level(part, draws, rng)
    c = crossing(values, slo)
    q = quantities(levels, kind)
    return at_crossing(c, q[:, 0]), at_crossing(c, q[:, 1]), c.held


def _resample_level(part: pd.DataFrame, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, 3) p99 TTFT, p99 TPOT (over successful requests) and error rate of resamples."""
    ok = part["ok"].fillna(False).to_numpy(bool)
    ttft, tpot = (np.where(ok, pd.to_numeric(part[c], errors="coerce").to_numpy(float, na_value=np.nan),
                           np.nan) for c in ("ttft_ms", "tpot_ms"))
    n = len(ok)
    out = np.empty((draws, 3))
    chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, draws, chunk):
        idx = rng.integers(0, n, size=(min(chunk, draws - start), n))
        rows = slice(start, start + len(idx))
        for col, values in ((0, ttft), (1, tpot)):
            out[rows, col] = row_percentiles(np.sort(values[idx], axis=1), [99.0],
                                             BOOTSTRAP_POSITION)[:, 0]
        out[rows, 2] = 1.0 - ok[idx].mean(axis=1)
    return out


def capacity_interval(levels: pd.DataFrame, requests: pd.DataFrame, slo: Any,
                      level: float = 0.95, draws: int = 1000,
                      seed: int | np.random.Generator | None = 0,
                      key: str = "config_id") -> CapacityInterval:
    """The capacity of LEVELS (catalog.capacity) with a bootstrap interval over REQUESTS.

    A draw in which even the lowest level misses counts as capacity 0; a draw in which every
    level holds counts at the highest level, so a high share_lower_bound makes hi a lower bound.
    """
    point = capacity(levels, slo)
    rps, conc, held = capacity_draws(levels, requests, slo, draws, seed, key)
    n = len(prepare(levels)[1])
    tail = (1.0 - level) / 2.0
    rps_lo, rps_hi = np.quantile(np.nan_to_num(rps, nan=0.0), [tail, 1 - tail])
    conc_lo, conc_hi = np.quantile(np.nan_to_num(conc, nan=0.0), [tail, 1 - tail])
    share_none, share_all = float(np.mean(held == 0)), float(np.mean(held == n))
    notes = []
    if share_all > tail:
        notes.append(f"every level held in {share_all:.0%} of draws: hi is a lower bound")
    if share_none > tail:
        notes.append(f"no level held in {share_none:.0%} of draws: lo is 0")
    return CapacityInterval(point.rps, float(rps_lo), float(rps_hi), point.concurrency,
                            float(conc_lo), float(conc_hi), level, draws, share_none,
                            share_all, "; ".join(notes))


def rank_probabilities(criteria: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
                       names: Sequence[str] | None = None, top: int = 3,
                       seed: int | np.random.Generator | None = 0) -> pd.DataFrame:
    """P(rank 1) and P(rank <= TOP) per deployment from B draws of its criteria (B, D[, K]).

    SCORE maps one draw's (D[, K]) criteria to D scores, higher is better; it is called once per
    draw because scores like TOPSIS normalise over the deployments of that draw. Ties break at
    random, so identical deployments share the probability.
    """
    criteria = np.asarray(criteria, dtype=float)
    scores = np.stack([np.asarray(score(criteria[i]), dtype=float)
                       for i in range(criteria.shape[0])])
    return probabilities_from_scores(scores, names, top, seed)


# Two deployments whose criteria all lie within this fraction of each other in a draw are the
# same to a user: the capacity search brackets capacity only to its precision (10% by
# default), and two runs of one server differ in p99 latency from host noise alone (one
# scripted queue measured twice on the 2-vCPU CI host: TPOT p99 10.4 vs 11.2 ms, 8%, with
# identical capacities; at 10% that was a winner in 39% of draws; on a 2-vCPU Xeon, 11.0 vs
# 13.3 ms, 17%, a winner at 15%). TOPSIS turns any difference into a clear order (with two
# rows, scores 1 and 0), so without this, two identical servers measured twice get P(#1)
# spread evenly over [0, 1]. The validation fixture's probes repeat to 10-20% (its README).
TIE_TOLERANCE = 0.20


def share_first_place(scores: np.ndarray, criteria: np.ndarray,
                      tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """SCORES (B, D) with each draw's rows practically equal to its winner given the winner's
    score, so that they share first place in probabilities_from_scores' random tie break.

    Practically equal: every criterion of CRITERIA (B, D, K) within TOLERANCE (relative) of the
    winner's, or within the two rows' own noise if that is wider: the spread of a difference of
    two estimates, sqrt(n_row² + n_winner²), each n the half-width of that criterion's central
    95% over the B draws relative to its median. A p99 of 100 requests near an SLO swings by
    more than 10% between two runs of one server; a difference inside that swing is noise.
    """
    scores = np.asarray(scores, dtype=float).copy()
    if not scores.size:
        return scores
    criteria = np.asarray(criteria, dtype=float)
    safe = np.nan_to_num(scores, nan=-np.inf)
    best = safe.argmax(axis=1)
    b = np.arange(len(scores))
    top = criteria[b, best][:, None, :]
    noise = relative_noise(criteria)  # (D, K)
    allowed = np.maximum(tolerance, np.sqrt(noise[None] ** 2 + noise[best][:, None, :] ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.maximum(np.abs(criteria), np.abs(top))
        close = np.where(scale > 0, np.abs(criteria - top) / scale, 0.0) <= allowed
    same = close.all(axis=2) & np.isfinite(safe)
    scores[same] = np.repeat(scores[b, best][:, None], scores.shape[1], axis=1)[same]
    return scores


def relative_noise(criteria: np.ndarray) -> np.ndarray:
    """(D, K): half the central 95% of each criterion over the B draws of CRITERIA (B, D, K),
    relative to its median; 0 where it is undefined (one draw, a zero or missing median)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        lo, mid, hi = np.nanquantile(criteria, [0.025, 0.5, 0.975], axis=0)
        noise = (hi - lo) / 2 / np.abs(mid)
    return np.where(np.isfinite(noise), noise, 0.0)


def probabilities_from_scores(scores: np.ndarray, names: Sequence[str] | None = None,
                              top: int = 3,
                              seed: int | np.random.Generator | None = 0) -> pd.DataFrame:
    """P(rank 1), P(rank <= TOP) and mean rank per deployment from (B, D) scores, higher better.

    A NaN score ranks last in its draw; ties break at random, so identical deployments share
    (and, through share_first_place, practically equal ones).
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    b, d = scores.shape
    tie = rng_of(seed).random((b, d))
    order = np.lexsort((tie, -scores), axis=1)
    ranks = np.empty((b, d), int)
    np.put_along_axis(ranks, order, np.arange(1, d + 1)[None, :].repeat(b, axis=0), axis=1)
    names = list(names) if names is not None else [str(i) for i in range(d)]
    return pd.DataFrame({"deployment": names, "p_first": (ranks == 1).mean(axis=0),
                         f"p_top{top}": (ranks <= top).mean(axis=0),
                         "mean_rank": ranks.mean(axis=0)})
