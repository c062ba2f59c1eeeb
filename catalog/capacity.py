"""Capacity: the highest load at which one deployment × length profile still holds a profile's SLO.

The method. Load levels are sorted by their load (concurrency N, or rate λ req/s). Walking up
from the lowest, the levels that hold the SLO (servecat.slo) before the first one that does not
are the contiguous passes; the last of them and the first failure bracket the capacity. Between
the two, each SLO the failing level misses is taken as linear in load, and its crossing of the
limit is t = (limit − v_pass) / (v_fail − v_pass) ∈ [0, 1] of the way up (for p99s this is the
p99/limit ratio crossing 1.0); the first SLO to cross sets t. Every quantity of the operating point
(req/s, concurrency, tok/s, p99s, goodput) is interpolated at that same t on the measured curve.

- Every level holds: capacity = the highest measured level, flagged as a lower bound (`>=`).
- The lowest level fails: no capacity; the reason names the SLOs it misses.
- Non-monotone curves (a level above the first failure holds again): the first failure still
  closes the bracket, and the reason says the curve is not monotone.

Capacity in concurrency: the level itself for closed-loop (concurrency) levels; for open-loop
(rate) levels Little's law, in-flight = req/s × mean E2E latency (s).
Cost per 1M output tokens = $/h × GPUs ÷ (output tok/s × 3600) × 10⁶ (DESIGN.md); hardware.yaml
prices are per GPU-hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from servecat.slo import SLO_METRICS, Slo, describe_misses, level_columns, misses

LOADS = ("concurrency", "rate")
GROUP_COLUMNS = ("deployment", "lengths", "load")
# Rows that are not measured load levels: a skipped config, or a level the client could not
# give as asked (bench/validity.py: dispatch lag or achieved rate), never ranked.
NOT_LEVELS = ("skipped", "invalid")
# Quantities interpolated at the crossing, in this order (columns of _quantities()).
QUANTITIES = ("rps", "concurrency", "output_tokens_per_s", "goodput_rps")


@dataclass(frozen=True, slots=True)
class Crossing:
    """Per draw: the levels holding before the first failure, and where the first SLO crosses."""

    held: np.ndarray     # (B,) int: contiguous passing levels from the lowest (0: none, L: all)
    t: np.ndarray        # (B,) fraction of the way from the last pass to the first failure
    missed: np.ndarray   # (B, 3) SLOs missed at the first failing level (SLO_METRICS order)
    again: np.ndarray    # (B,) a level above the first failure holds again (non-monotone)


@dataclass(frozen=True, slots=True)
class Capacity:
    """A deployment × length profile's capacity under one SLO, its bracket and operating point."""

    load: str                       # "concurrency" or "rate": the kind of the measured levels
    status: str                     # "bracketed", "lower_bound" or "none"
    rps: float                      # capacity in req/s (NaN when none)
    concurrency: float              # capacity in concurrent requests (NaN when none)
    lower_bound: bool               # every level held: the true capacity is >= rps
    non_monotone: bool              # a level above the first failure held again
    pass_level: float | None        # last passing measured level (in `load` units)
    fail_level: float | None        # first failing measured level above it
    pass_rps: float | None
    fail_rps: float | None
    limiting: tuple[str, ...]       # SLOs missed at the first failing level
    reason: str
    levels: int                     # measured levels used
    # The operating point: the deployment running at its capacity.
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    ttft_p99_ms: float
    tpot_p99_ms: float
    error_rate: float
    goodput_rps: float
    gpu_count: int
    usd_per_hour_on_demand: float
    usd_per_hour_spot: float
    cost_per_mtok_on_demand: float
    cost_per_mtok_spot: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["limiting"] = ",".join(self.limiting)
        return d


def crossing(slo_values: np.ndarray, slo: Slo) -> Crossing:
    """Where the SLO stops holding, for B draws of (B, L, 3) SLO metrics at load-sorted levels."""
    values = np.asarray(slo_values, dtype=float)
    b, n = values.shape[:2]
    miss = misses(values[..., 0], values[..., 1], values[..., 2], slo)  # (B, L, 3)
    fails = miss.any(axis=-1)
    held = np.where(fails.any(axis=1), np.argmax(fails, axis=1), n)
    rows = np.arange(b)
    f = np.minimum(held, n - 1)
    p = np.maximum(held - 1, 0)
    bracketed = (held > 0) & (held < n)
    missed = np.where((held < n)[:, None], miss[rows, f], False)
    vp, vf = values[rows, p], values[rows, f]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_each = (slo.limits() - vp) / (vf - vp)
    # Unknown values either side (no TTFT at the failure, no TPOT at the pass) give no slope to
    # follow: the crossing is taken at the last pass, the conservative end of the bracket.
    t_each = np.clip(np.nan_to_num(t_each, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
    t = np.where(bracketed, np.min(np.where(missed, t_each, 1.0), axis=1), 0.0)
    above = np.arange(n)[None, :] > held[:, None]
    again = (above & ~fails).any(axis=1) & (held < n)
    return Crossing(held=held, t=t, missed=missed, again=again)


def at_crossing(c: Crossing, quantity: np.ndarray) -> np.ndarray:
    """A per-level quantity, (L,) or (B, L), at each draw's crossing: NaN where none held."""
    q = np.broadcast_to(np.asarray(quantity, dtype=float), (len(c.held), np.shape(quantity)[-1]))
    n = q.shape[1]
    rows = np.arange(len(c.held))
    p, f = np.maximum(c.held - 1, 0), np.minimum(c.held, n - 1)
    lo, hi = q[rows, p], q[rows, f]
    # Where t is 0 (lower bound, or a crossing at the pass), an unknown value above must not leak in.
    value = np.where(c.t > 0, lo + c.t * (hi - lo), lo)
    return np.where(c.held > 0, value, np.nan)


def capacity(levels: pd.DataFrame, slo: Any, *, gpu_count: int = 1,
             on_demand_usd_per_gpu_hour: float = np.nan,
             spot_usd_per_gpu_hour: float = np.nan) -> Capacity:
    """The capacity of one deployment × length profile's measured LEVELS under SLO (see module doc)."""
    gpus = max(int(gpu_count), 1)
    return _capacity(levels, Slo.of(slo), gpus, on_demand_usd_per_gpu_hour * gpus,
                     spot_usd_per_gpu_hour * gpus)


def capacities(levels: pd.DataFrame, profiles: Iterable[Any],
               by: Sequence[str] = GROUP_COLUMNS) -> pd.DataFrame:
    """capacity() per group of BY × profile: one row each, with the group keys and `profile`.

    Prices come from `usd_per_hour_on_demand` / `usd_per_hour_spot` (the deployment's $/h, as
    catalog.cost.add_cost adds them) and GPUs from `gpu_count` where those columns exist.
    """
    keys = [k for k in by if k in levels.columns]
    rows = []
    groups = levels.groupby(keys, sort=True, dropna=False) if keys else [((), levels)]
    for group, part in groups:
        group = group if isinstance(group, tuple) else (group,)
        gpus = max(int(_first(part, "gpu_count", 1)), 1)
        on_demand, spot = _first(part, "usd_per_hour_on_demand"), _first(part, "usd_per_hour_spot")
        for profile in profiles:
            cap = _capacity(part, Slo.of(profile), gpus, on_demand, spot)
            rows.append({**dict(zip(keys, group, strict=True)),
                         "profile": getattr(profile, "name", None), **cap.to_dict()})
    return pd.DataFrame(rows)


def prepare(levels: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """(load kind, the measured levels sorted by load): skipped levels dropped, one load kind."""
    if "status" in levels:
        levels = levels[~levels["status"].fillna("ok").astype(str).isin(NOT_LEVELS)]
    kinds = levels["load"].dropna().astype(str).unique() if "load" in levels else []
    if len(kinds) > 1:
        raise ValueError(f"levels: mixed load kinds {sorted(kinds)}; "
                         "capacity is per load kind (group by `load`)")
    kind = str(kinds[0]) if len(kinds) else "concurrency"
    if kind not in LOADS:
        raise ValueError(f"levels: load {kind!r} is not one of {', '.join(LOADS)}")
    if kind not in levels:
        raise ValueError(f"levels: {kind} levels need a `{kind}` column")
    x = pd.to_numeric(levels[kind], errors="coerce").to_numpy(float, na_value=np.nan)
    order = np.argsort(x, kind="stable")
    return kind, levels.iloc[order]


def slo_values(levels: pd.DataFrame) -> np.ndarray:
    """(L, 3) p99 TTFT, p99 TPOT and error rate of summary rows, in SLO_METRICS order."""
    return np.stack(level_columns(levels), axis=-1)


def quantities(levels: pd.DataFrame, kind: str) -> np.ndarray:
    """(L, 4) req/s, concurrency, output tok/s and goodput per level (QUANTITIES order)."""
    col = _numeric(levels)
    rps = np.where(np.isnan(col("requests_per_s")) & (kind == "rate"), col("rate"),
                   col("requests_per_s"))
    # Closed loop: the level is the concurrency. Open loop: Little's law, in-flight = λ × W.
    conc = col("concurrency") if kind == "concurrency" else rps * col("e2e_mean_ms") / 1000.0
    return np.stack([rps, conc, col("output_tokens_per_s"), col("goodput_rps")], axis=-1)


def _capacity(levels: pd.DataFrame, slo: Slo, gpus: int, on_demand: float,
              spot: float) -> Capacity:
    kind, levels = prepare(levels)
    x = pd.to_numeric(levels[kind], errors="coerce").to_numpy(float, na_value=np.nan)
    return capacity_of(kind, x, slo_values(levels), quantities(levels, kind), slo, gpus,
                       on_demand, spot)


def capacity_of(kind: str, x: np.ndarray, values: np.ndarray, q: np.ndarray, slo: Slo,
                gpus: int, on_demand: float, spot: float) -> Capacity:
    """capacity() on prepared arrays: load-sorted levels X, their (L, 3) SLO values and (L, 4)
    QUANTITIES; ON_DEMAND and SPOT are the deployment's $/hour (all its GPUs)."""
    n = len(x)
    if n == 0:
        return _empty(kind, "no measured load levels", gpus, on_demand, spot)
    c = crossing(values[None], slo)
    held, missed, again = int(c.held[0]), c.missed[0], bool(c.again[0])
    limiting = tuple(m for m, hit in zip(SLO_METRICS, missed, strict=True) if hit)
    if held == 0:
        why = describe_misses(values[0], missed, slo)
        return _empty(kind, f"no capacity: the lowest measured level, {_level(kind, x[0])}, "
                            f"misses the SLO ({why})", gpus, on_demand, spot, limiting, n, again,
                      fail=(float(x[0]), float(q[0, 0])))
    rps, conc, tps, goodput = (float(at_crossing(c, q[:, i])[0]) for i in range(q.shape[1]))
    ttft, tpot, err = (float(at_crossing(c, values[:, i])[0]) for i in range(3))
    p = held - 1
    if held == n:
        status = "lower_bound"
        reason = (f"every measured level holds the SLO, up to {_level(kind, x[p])}: capacity "
                  f">= {rps:.4g} req/s (measure higher loads to bracket it)")
        fail: tuple[float | None, float | None] = (None, None)
    else:
        status, fail = "bracketed", (float(x[held]), float(q[held, 0]))
        reason = (f"holds at {_level(kind, x[p])} and misses at {_level(kind, x[held])} "
                  f"({describe_misses(values[held], missed, slo)}); linear crossing at "
                  f"{float(c.t[0]):.2f} of the way: {rps:.4g} req/s, {conc:.4g} concurrent")
    if again:
        reason += ("; a level above the first failure holds again: the curve is not monotone, "
                   "capacity is taken below the first failure")
    return Capacity(
        load=kind, status=status, rps=rps, concurrency=conc, lower_bound=held == n,
        non_monotone=again, pass_level=float(x[p]), fail_level=fail[0],
        pass_rps=float(q[p, 0]), fail_rps=fail[1], limiting=limiting, reason=reason, levels=n,
        **_operating_point(tps, ttft, tpot, err, goodput, gpus, on_demand, spot))


def _operating_point(tps: float, ttft: float, tpot: float, err: float, goodput: float,
                     gpus: int, on_demand: float, spot: float) -> dict[str, Any]:
    tokens_per_hour = tps * 3600.0 if tps > 0 else np.nan
    return {"output_tokens_per_s": tps, "output_tokens_per_s_per_gpu": tps / gpus,
            "ttft_p99_ms": ttft, "tpot_p99_ms": tpot, "error_rate": err, "goodput_rps": goodput,
            "gpu_count": gpus, "usd_per_hour_on_demand": on_demand, "usd_per_hour_spot": spot,
            "cost_per_mtok_on_demand": on_demand / tokens_per_hour * 1e6,
            "cost_per_mtok_spot": spot / tokens_per_hour * 1e6}


def _empty(kind: str, reason: str, gpus: int, on_demand: float, spot: float,
           limiting: tuple[str, ...] = (), n: int = 0, again: bool = False,
           fail: tuple[float | None, float | None] = (None, None)) -> Capacity:
    nan = float("nan")
    return Capacity(load=kind, status="none", rps=nan, concurrency=nan, lower_bound=False,
                    non_monotone=again, pass_level=None, fail_level=fail[0], pass_rps=None,
                    fail_rps=fail[1], limiting=limiting, reason=reason, levels=n,
                    **_operating_point(nan, nan, nan, nan, nan, gpus, on_demand, spot))


def _level(kind: str, value: float) -> str:
    return f"concurrency {value:g}" if kind == "concurrency" else f"rate {value:g}/s"


def _numeric(frame: pd.DataFrame):
    def col(name: str) -> np.ndarray:
        if name not in frame:
            return np.full(len(frame), np.nan)
        return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)
    return col


def _first(frame: pd.DataFrame, name: str, default: float = np.nan) -> float:
    if name not in frame:
        return default
    values = pd.to_numeric(frame[name], errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else default
