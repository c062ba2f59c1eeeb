"""Calibrate the roofline's physics, not its answers: per hardware × engine × quantization, fit
the five quantities the roofline (catalog/roofline.py) assumes — the share of memory bandwidth a
decode step reaches, the share of peak FLOPs a prefill reaches, and the framework's time per
step, per sequence in a step and per request — to every load level measured, then estimate with them.

Why the physics rather than a regression of each answer (catalog/calibration.py's `ridge` and
`factor`): a capacity is where a latency crosses an SLO, a threshold of the physics. A
regression of log capacity on features has to learn that threshold from a few dozen operating
points; the load levels under it are ten times as many, and each says what one step costs at
one batch. On a small host the framework's overhead sets a small model's step, which no
bandwidth factor can express. Fitted on those levels, the roofline's own queueing and the
search's own grid (roofline.searched_clients) turn the physics into capacities like for like.

What the fitted physics still misses at the operating points (a capacity is a p99 crossing an
SLO, which the levels' medians do not pin down) is learnt by config in a second stage
(catalog/residual.py), whose residuals give each metric's 95% prediction interval. A row
whose group borrows its physics (POOLS) gets the spread the fitted groups show under the
physics they would borrow (borrowed_assumptions): on a large matrix that is most rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import astuple, replace

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from catalog.calibration import KEY
from catalog.residual import features, fit_correction
from catalog.roofline import NEEDED, Assumptions, Rows, at_clients, estimate, physics, read_rows
from servecat.hardware import Hardware
from servecat.profiles import Profile

# The physics is fitted per group, narrowest first (fitted_assumptions): a model's framework
# overhead and a size's compute share differ too much to share one fit (tiny vs small on this
# CPU: the step is 2-4 ms of overhead against 10-40 ms of arithmetic).
GROUP = ("hardware", "engine", "quantization", "model")
# Where a deployment's own group has too few levels: its model at other quantizations (MODEL)
# and its quantization on other models (DTYPE), then wider groups. With both, it takes the
# framework's overheads from MODEL (they are the model's: its layers, its steps) and the
# efficiencies from DTYPE (the dtype's kernels). Taking all five from DTYPE, as before
# 2026-12-04, carried a size's overheads to another: on the validation fixture, before any
# tiny fp32 was measured, medium fp32's physics put tiny fp32 at 3 req/s against 57 measured,
# and the sensor measured 29 of 51 deployments before every top 3 (21 with this; 19 with
# catalog/measure_order.py's union of the groups since).
MODEL = ("hardware", "engine", "model")
DTYPE = ("hardware", "engine", "quantization")
POOLS = (GROUP, MODEL, DTYPE, ("hardware", "engine"), ("hardware",))
EFFICIENCIES = ("bandwidth_efficiency", "compute_efficiency")  # what DTYPE lends; MODEL the rest
PARAMS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms",
          "sequence_overhead_ms", "request_overhead_ms")
# The fit's range per parameter. An efficiency is a share of the hardware table's figure, and
# a table may understate a host (configs/hardware.yaml's `cpu`: 0.2 TFLOPs and 20 GB/s for
# any 2-vCPU host, where this AVX-512 one fits ~3x both): up to 20x. Overheads from nothing to
# a second.
LOWER = np.log([1e-4, 1e-4, 1e-4, 1e-5, 1e-4])
UPPER = np.log([20.0, 20.0, 1e3, 1e3, 1e3])
# The fit starts from each of these and keeps the best: its landscape is flat along what a
# group's levels do not pin down (a tiny model's bandwidth share behind its overheads), and
# one start settles wherever its path flattens. From the first alone the validation fixture
# scored capacity 19.6% and p50 TPOT 18.9%; from the second alone, 24.2% and 19.2%.
STARTS = np.log([[0.5, 0.3, 1.0, 0.1, 1.0], [1.0, 1.0, 0.5, 0.3, 10.0],
                 [0.3, 0.1, 2.0, 0.03, 0.3]])
START = STARTS[0]
# A weak pull of each log-parameter towards START: where the levels leave a direction flat,
# the fit settles near the prior instead of wherever the optimizer's path ends, so that fits
# from different starts, and refits on nearly the same levels, agree. 0.05 per nat: a level's
# 5% miss outweighs a parameter's whole e-fold.
PRIOR_WEIGHT = 0.05
# What a load level says about the physics: its step (p50 TPOT), its prefill and queueing (p50
# TTFT) and its throughput.
LEVEL_METRICS = ("tpot_p50_ms", "ttft_p50_ms", "requests_per_s")
MIN_LEVELS = 6  # fewer levels than this in a group: the group takes the pooled fit
STEADY_REQUESTS_PER_CLIENT = 2  # below: a burst, not a closed loop's steady state (level_rows)


def level_rows(summary: pd.DataFrame | None) -> pd.DataFrame:
    """The closed-loop load levels of SUMMARY a fit can use: measured (status ok, valid), at a
    concurrency, with every LEVEL_METRICS figure positive."""
    if summary is None or summary.empty or "load" not in summary:
        return pd.DataFrame()
    s = summary
    keep = s["load"].astype(str).eq("concurrency").to_numpy().copy()
    if "status" in s:
        keep &= s["status"].astype(str).eq("ok").to_numpy()
    if "valid" in s:
        keep &= s["valid"].fillna(True).astype(bool).to_numpy()
    for c in ("concurrency", *LEVEL_METRICS):
        v = pd.to_numeric(s[c], errors="coerce").to_numpy(float) if c in s else np.nan
        keep &= np.isfinite(v) & (v > 0)
    # A level whose clients sent fewer than two requests each never reached a steady state:
    # its requests left at once and queued as one burst (c=64 with 64 requests: a median TTFT
    # of half the drain), which the closed loop's steady-state physics does not describe.
    if "requests" in s:
        n = pd.to_numeric(s["requests"], errors="coerce").to_numpy(float)
        c = pd.to_numeric(s["concurrency"], errors="coerce").to_numpy(float)
        keep &= ~(n < STEADY_REQUESTS_PER_CLIENT * c)
    return s[keep].reset_index(drop=True)


def _assumptions(theta: np.ndarray, base: Assumptions) -> Assumptions:
    v = np.exp(theta)
    return replace(base, **dict(zip(PARAMS, (float(x) for x in v), strict=True)))


def _residuals(theta: np.ndarray, rows: Rows, clients: np.ndarray, measured: np.ndarray,
               hardware: Mapping[str, Hardware], base: Assumptions) -> np.ndarray:
    lv = at_clients(physics(rows, hardware, _assumptions(theta, base)), clients)
    got = np.concatenate([lv.tpot_p50_s * 1e3, lv.ttft_p50_s * 1e3, lv.rate])
    return np.concatenate([np.log(np.maximum(got, 1e-12)) - measured,
                           PRIOR_WEIGHT * (theta - START)])


# Fits already made, by what they were fitted on: a leave-one-out or a sensor's step refits
# every group, yet only the groups of the deployment left out or added see other levels.
_FITS: dict[tuple, Assumptions] = {}
MAX_FITS = 512


def fit_physics(levels: pd.DataFrame, hardware: Mapping[str, Hardware],
                base: Assumptions | None = None) -> Assumptions:
    """The PARAMS that best explain LEVELS (level_rows), least squares on the logs with a soft
    L1 loss (one noisy level must not drag the step of all the others)."""
    base = base or Assumptions()
    key = _fit_key(levels, hardware, base)
    if key is None:
        return _fit_physics(levels, hardware, base)
    if key not in _FITS:
        if len(_FITS) >= MAX_FITS:
            _FITS.clear()
        _FITS[key] = _fit_physics(levels, hardware, base)
    return _FITS[key]


def _fit_key(levels: pd.DataFrame, hardware: Mapping[str, Hardware], base: Assumptions
             ) -> tuple | None:
    """What a fit depends on: the levels' configs and figures, their hardware, the base
    (None where the base holds arrays: no memo then)."""
    if not all(np.ndim(v) == 0 for v in astuple(base)):
        return None
    cols = [c for c in (*NEEDED, "gpu_count", "max_concurrency", "concurrency", *LEVEL_METRICS)
            if c in levels]
    digest = hashlib.sha1(pd.util.hash_pandas_object(levels[cols].astype(str), index=False)
                          .to_numpy().tobytes()).hexdigest()
    used = set(levels["hardware"].astype(str))
    hw = tuple((n, h.memory_gb, h.memory_bandwidth_gbps, h.peak_bf16_tflops)
               for n, h in sorted(hardware.items()) if n in used)
    return digest, tuple(cols), hw, astuple(base)


def _fit_physics(levels: pd.DataFrame, hardware: Mapping[str, Hardware], base: Assumptions
                 ) -> Assumptions:
    clients = pd.to_numeric(levels["concurrency"]).to_numpy(float)
    measured = np.log(np.concatenate([pd.to_numeric(levels[m]).to_numpy(float)
                                      for m in LEVEL_METRICS]))
    args = (read_rows(levels, hardware), clients, measured, hardware, base)
    fits = [least_squares(_residuals, start, bounds=(LOWER, UPPER), loss="soft_l1",
                          f_scale=0.2, args=args, max_nfev=200)
            for start in STARTS]
    return _assumptions(min(fits, key=lambda r: r.cost).x, base)


def fitted_assumptions(rows: pd.DataFrame, levels: pd.DataFrame,
                       hardware: Mapping[str, Hardware], base: Assumptions | None = None
                       ) -> tuple[Assumptions, np.ndarray]:
    """Per row of ROWS, its group's fitted physics (arrays in one Assumptions) and how it was
    fitted: `physical` (its own group: its model on its hardware × engine × quantization),
    `physical (pooled)` (wider groups, where its own has too few levels: POOLS) or `prior`
    (nothing measured)."""
    base = base or Assumptions()
    values = {p: np.full(len(rows), getattr(base, p), float) for p in PARAMS}
    how = np.full(len(rows), "prior", dtype=object)
    if levels.empty:
        return replace(base, **values), how
    levels = levels.reset_index(drop=True)
    cache: dict[tuple, Assumptions] = {}

    def fitted(mask: np.ndarray, key: tuple) -> Assumptions:
        if key not in cache:
            cache[key] = fit_physics(levels[mask].reset_index(drop=True), hardware, base)
        return cache[key]

    # From the narrowest group with enough levels to the widest (POOLS).
    lv_keys = [_keys(levels, pool).to_numpy() for pool in POOLS]
    row_keys = [_keys(rows, pool) for pool in POOLS]
    for _, idx in pd.Series(range(len(rows))).groupby(row_keys[0].to_numpy(),
                                                      sort=False).groups.items():
        first = int(np.asarray(idx)[0])
        keys = [rk.iat[first] for rk in row_keys]
        masks = [lk == k for lk, k in zip(lv_keys, keys, strict=True)]
        found = [d for d, mask in enumerate(masks) if mask.sum() >= MIN_LEVELS]
        if found and found[0] != 0 and {1, 2} <= set(found):
            # Its model's overheads at other dtypes, its dtype's efficiencies on other models.
            a = _lend(fitted(masks[1], (1, keys[1])), fitted(masks[2], (2, keys[2])))
        elif found:
            a = fitted(masks[found[0]], (found[0], keys[found[0]]))
        elif len(levels) >= MIN_LEVELS:
            a = fitted(np.ones(len(levels), bool), ("all",))
        else:
            continue
        label = "physical" if found and found[0] == 0 else "physical (pooled)"
        for p in PARAMS:
            values[p][np.asarray(idx)] = getattr(a, p)
        how[np.asarray(idx)] = label
    return replace(base, **values), how


def borrowed_assumptions(rows: pd.DataFrame, levels: pd.DataFrame,
                         hardware: Mapping[str, Hardware], base: Assumptions | None = None
                         ) -> tuple[Assumptions, np.ndarray]:
    """Per row of ROWS whose own group is fitted, the physics it would borrow without its
    levels (arrays in one Assumptions), and which rows have one: as POOLS lends, its model's
    overheads from that model's other fitted groups and its dtype's efficiencies from that
    dtype's other fitted groups (geometric means of their own fits; with one of the two, all
    five from it). What such physics misses at the fitted groups' operating points is what an
    estimate that does borrow (physical (pooled)) must allow for in its interval."""
    base = base or Assumptions()
    values = {p: np.full(len(rows), getattr(base, p), float) for p in PARAMS}
    has = np.zeros(len(rows), bool)
    if levels.empty:
        return replace(base, **values), has
    levels = levels.reset_index(drop=True)
    group, model, dtype = (_keys(levels, cols).to_numpy() for cols in (GROUP, MODEL, DTYPE))
    own: dict[str, tuple[Assumptions, str, str]] = {}
    for key in dict.fromkeys(group):
        mask = group == key
        if mask.sum() >= MIN_LEVELS:
            first = int(np.flatnonzero(mask)[0])
            own[key] = (fit_physics(levels[mask].reset_index(drop=True), hardware, base),
                        model[first], dtype[first])
    row_group = _keys(rows, GROUP).to_numpy()
    for key, (_, its_model, its_dtype) in own.items():
        idx = row_group == key
        same_model = [a for k, (a, m, _) in own.items() if k != key and m == its_model]
        same_dtype = [a for k, (a, _, d) in own.items() if k != key and d == its_dtype]
        if not idx.any() or not (same_model or same_dtype):
            continue
        lent = _lend(_geomean(same_model or same_dtype), _geomean(same_dtype or same_model))
        for p in PARAMS:
            values[p][idx] = getattr(lent, p)
        has[idx] = True
    return replace(base, **values), has


def _lend(overheads: Assumptions, efficiencies: Assumptions) -> Assumptions:
    """OVERHEADS' physics with EFFICIENCIES' efficiencies (POOLS: MODEL's and DTYPE's)."""
    return replace(overheads, **{p: getattr(efficiencies, p) for p in EFFICIENCIES})


def _geomean(fits: Sequence[Assumptions]) -> Assumptions:
    """FITS' PARAMS, each their geometric mean."""
    return replace(fits[0], **{p: float(np.exp(np.mean([np.log(getattr(a, p)) for a in fits])))
                               for p in PARAMS})


def physical_calibrate(rows: pd.DataFrame, levels: pd.DataFrame, measured: pd.DataFrame,
                       hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
                       metrics: Sequence[str], base: Assumptions | None = None) -> pd.DataFrame:
    """As catalog.calibration.calibrate's output, for workload ROWS (deployment × length
    profile): the bare roofline's metrics, and `<metric>_est/_lo/_hi/_fit` from the physics
    fitted on LEVELS, corrected and given its interval by the misses on MEASURED (KEY +
    metrics) of the fitted deployments (catalog/residual.py)."""
    base = base or Assumptions()
    bare = estimate(rows, hardware, profiles, base)
    a, how = fitted_assumptions(rows, levels, hardware, base)
    est = estimate(rows, hardware, profiles, a)
    out = bare.copy()
    fitted_on = set(levels["deployment"].astype(str)) if len(levels) else set()
    per_row = np.tile(how, len(profiles))  # estimate() stacks one block of ROWS per profile
    joined = est[list(KEY)].merge(measured[[*KEY, *metrics]], on=list(KEY), how="left")
    deployment = joined["deployment"].astype(str).to_numpy()
    train = np.isin(deployment, list(fitted_on))
    # The second stage (catalog/residual.py): per metric, the fitted deployments' misses at
    # their operating points, by config and profile, shift the estimate and give its interval.
    x = features(est, [p.name for p in profiles])
    # A borrowed physics misses more than a row's own: what the fitted groups' operating points
    # see under the physics they would have borrowed (borrowed_assumptions) sets the interval
    # of the rows that do borrow.
    borrowing = per_row != "physical"
    lent_est = None
    if borrowing.any():
        lent, lends = borrowed_assumptions(rows, levels, hardware, base)
        lent_est = estimate(rows, hardware, profiles, lent) if lends.any() else None
    spread = {}  # metric -> the interval's log half-width per row
    for m in metrics:
        point = est[m].to_numpy(float)
        y = pd.to_numeric(joined[m], errors="coerce").to_numpy(float)
        ok = train & np.isfinite(y) & (y > 0) & (point > 0)
        miss = np.log(point[ok]) - np.log(y[ok])
        shift, se, q = fit_correction(x[ok], miss, deployment[ok]).apply(x)
        if lent_est is not None:
            se = np.where(borrowing, np.maximum(se, _borrowed_sd(
                lent_est[m].to_numpy(float), shift, y, ok & np.tile(lends, len(profiles)))), se)
        point = point * np.exp(-shift)
        spread[m] = q * se
        with np.errstate(divide="ignore"):
            lo, hi = point * np.exp(-spread[m]), point * np.exp(spread[m])
        out[f"{m}_est"], out[f"{m}_lo"], out[f"{m}_hi"] = point, lo, hi
        out[f"{m}_fit"] = per_row
    _no_capacity_is_not_certain(out, est, rows, hardware, profiles, a, spread)
    out.attrs["assumptions"] = {**base.to_dict(), "text": (
        base.describe().replace("no framework overhead", "framework overhead per step and per "
                                "sequence")
        + "; efficiencies and overheads fitted per hardware x engine x quantization on the "
          "measured load levels (catalog/physical.py), then corrected by config on the "
          "measured operating points (catalog/residual.py)")}
    return out


LATENCIES = ("ttft_p99_ms", "tpot_p99_ms")  # what a capacity's SLO is on (servecat.profiles)
AT_CAPACITY = ("capacity_rps", "output_tokens_per_s")


def _no_capacity_is_not_certain(out: pd.DataFrame, est: pd.DataFrame, rows: pd.DataFrame,
                                hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
                                a: Assumptions, spread: Mapping[str, np.ndarray]) -> None:
    """Where the physics meets no SLO at one client (a capacity of 0, which no factor can
    widen), OUT's upper bounds of AT_CAPACITY become those of SLOs loosened by the p99
    latencies' own interval: the capacity if the latencies are as low as their intervals
    allow. On the validation fixture held-out medium fp32 at cost-saver read [0, 0] against
    2.5 and 1.3 req/s measured."""
    if not set(LATENCIES) <= set(spread) or "capacity_rps_est" not in out:
        return
    zero = out["capacity_rps_est"].to_numpy(float) == 0.0
    if not zero.any():
        return
    loose = np.exp(np.maximum(*(spread[m] for m in LATENCIES)))
    name = est["profile"].astype(str).to_numpy()
    factor = {p.name: float(loose[zero & (name == p.name)].max(initial=1.0)) for p in profiles}
    loosened = [replace(p, ttft_p99_ms=p.ttft_p99_ms * factor[p.name],
                        tpot_p99_ms=p.tpot_p99_ms * factor[p.name]) for p in profiles]
    wide = estimate(rows, hardware, loosened, a)
    for m in AT_CAPACITY:
        if f"{m}_hi" in out:
            out.loc[zero, f"{m}_hi"] = wide[m].to_numpy(float)[zero]


def _borrowed_sd(borrowed: np.ndarray, shift: np.ndarray, measured: np.ndarray,
                 rows: np.ndarray) -> float:
    """The log-sd of BORROWED's miss (after SHIFT, the correction every row gets) at the
    measured ROWS; 0 where fewer than two. A borrowed capacity of 0 where one was measured
    counts as a miss of a factor of ten: it says the physics was far off, not how far."""
    use = rows & np.isfinite(borrowed)
    if use.sum() < 2:
        return 0.0
    got = np.maximum(borrowed[use] * np.exp(-shift[use]), measured[use] / 10.0)
    return float(np.sqrt(np.mean((np.log(got) - np.log(measured[use])) ** 2)))


def physical_leave_one_out(rows: pd.DataFrame, levels: pd.DataFrame, measured: pd.DataFrame,
                           hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
                           metrics: Sequence[str], base: Assumptions | None = None
                           ) -> pd.DataFrame:
    """catalog.calibration.leave_one_deployment_out for the physical fit (from BASE's
    assumptions): each measured deployment estimated from the physics and misses of the
    others only."""
    have = measured.dropna(subset=list(metrics), how="all")
    parts = []
    for d in dict.fromkeys(have["deployment"].astype(str)):
        mine = rows[rows["deployment"].astype(str) == d]
        if mine.empty:
            continue
        others = levels[levels["deployment"].astype(str) != d] if len(levels) else levels
        # D's physics and the interval's misses (the others' own estimates) both come from a
        # fit without D's levels and operating points.
        cal = physical_calibrate(rows, others,
                                 measured[measured["deployment"].astype(str) != d],
                                 hardware, profiles, metrics, base)
        cal = cal[cal["deployment"].astype(str) == d]
        got_all = have[have["deployment"].astype(str) == d]
        for m in metrics:
            got = got_all[[*KEY, m]].rename(columns={m: "measured"}).merge(
                cal[[*KEY, m, f"{m}_est", f"{m}_lo", f"{m}_hi"]], on=list(KEY))
            parts.append(pd.DataFrame({
                **{k: got[k] for k in KEY}, "metric": m, "measured": got["measured"],
                "roofline": got[m], "estimate": got[f"{m}_est"], "lo": got[f"{m}_lo"],
                "hi": got[f"{m}_hi"]}))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out[np.isfinite(out["measured"]) & (out["measured"] > 0)] if len(out) else out


def _keys(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    parts = [frame[c].astype(str) if c in frame else pd.Series("", index=frame.index)
             for c in columns]
    key = parts[0]
    for p in parts[1:]:
        key = key + "/" + p
    return key.reset_index(drop=True)
