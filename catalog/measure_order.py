"""Measure what matters first: the deployments whose measurement is most likely to change a
recommendation, from the estimates' prediction intervals.

For each model × length profile × profile (the catalog's ranking groups), B draws give every
unmeasured deployment its criteria from its estimate's interval (log-normal: the 95% interval
is ±1.96 sd of the log) beside the measured deployments' own figures; TOPSIS with the profile's
weights ranks each draw as the catalog does (catalog.ranking). A deployment's priority is the
chance that it is in the top 3 of some group, 1 - prod(1 - P(top 3)) over its groups: that is
when its measurement is needed, as a top pick or to move one. A deployment with no chance
anywhere goes last, ordered by its estimated capacity.

Why the chance of some top 3 rather than the highest P(top 3) of one group (before
2026-12-05): a deployment that may place in several groups is more likely needed than one that
may place in one, and a maximum cannot see it. On the validation fixture the maximum's order
moved with the draws' Monte Carlo noise (21, 22, 21, 22 of 51 deployments to recover every top
3 over four seeds at 200 draws; 41, 25, 21, 21 at 1,000); this order needed 19-20 under all
eight. The groups are taken as independent: a held-out deployment's misses across its groups
correlate by only ~0.2 once the calibration has taken the shared part out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from catalog.topsis import topsis_batch
from servecat.profiles import CRITERIA, Profile

DRAWS = 200
TOP = 3
Z = 1.959964
GROUP = ("model", "lengths", "profile")
# Uncalibrated (nothing measured yet), most of the roofline's error is one factor every
# deployment shares (the efficiencies, the framework's overhead): it cannot reorder them. Of its
# stated log-sd, this much is drawn per deployment and the rest once per draw for all.
PRIOR_OWN_LOG_SD = 0.5
# The criteria a profile may weight (servecat.profiles.CRITERIA) plus capacity: what the
# catalog ranks a deployment on at its operating point, quality aside.
RANKED = (*CRITERIA, "capacity_rps")


@dataclass(frozen=True, slots=True)
class Candidates:
    """Rows (deployment × length profile × profile) with criteria to rank: measured rows carry
    their figures (sd 0), estimated rows their estimate and log-sd per criterion."""

    table: pd.DataFrame  # GROUP + deployment + measured + RANKED
    log_sd: np.ndarray   # (rows, len(RANKED)): drawn per row
    shared_sd: np.ndarray | None = None  # (rows, len(RANKED)): drawn once per draw for all


def candidates(estimates: pd.DataFrame, measured: pd.DataFrame | None = None) -> Candidates:
    """ESTIMATES (catalog.estimates.estimates_table) for the unmeasured deployments, MEASURED
    (the catalog's deployment rows: GROUP + deployment + RANKED + rank) for the measured ones;
    a measured row the catalog did not rank (no capacity) takes no part."""
    est = estimates.copy()
    taken = set() if measured is None else set(measured["deployment"].astype(str))
    est = est[~est["deployment"].astype(str).isin(taken)]
    tps = est["output_tokens_per_s"].to_numpy(float)
    gpus = pd.to_numeric(est.get("gpu_count", 1), errors="coerce")
    crit = {
        "output_tokens_per_s_per_gpu": (tps / np.asarray(gpus if np.ndim(gpus) else 1, float),
                                        _sd(est, "output_tokens_per_s")),
        "ttft_p99_ms": (est["ttft_p99_ms"].to_numpy(float), _sd(est, "ttft_p99_ms")),
        "tpot_p99_ms": (est["tpot_p99_ms"].to_numpy(float), _sd(est, "tpot_p99_ms")),
        "cost_per_mtok_on_demand": (est["cost_per_mtok_on_demand"].to_numpy(float),
                                    _sd(est, "output_tokens_per_s")),
        "goodput_rps": (est["capacity_rps"].to_numpy(float), _sd(est, "capacity_rps")),
        "capacity_rps": (est["capacity_rps"].to_numpy(float), _sd(est, "capacity_rps")),
    }
    e = est[[*GROUP, "deployment"]].assign(measured=False, **{k: v[0] for k, v in crit.items()})
    e_sd = np.column_stack([crit[k][1] for k in RANKED]) if len(est) else np.zeros((0, len(RANKED)))
    prior = (est["fit"].astype(str).to_numpy() == "prior")[:, None] if "fit" in est else False
    own = np.where(prior, np.minimum(e_sd, PRIOR_OWN_LOG_SD), e_sd)
    shared = np.sqrt(np.maximum(e_sd**2 - own**2, 0.0))
    if measured is None or measured.empty:
        return Candidates(e.reset_index(drop=True), own, shared)
    m = measured[pd.notna(measured["rank"])] if "rank" in measured else measured
    m = m[[*GROUP, "deployment", *RANKED]].assign(measured=True)
    table = pd.concat([e, m], ignore_index=True)
    zeros = np.zeros((len(m), len(RANKED)))
    return Candidates(table, np.vstack([own, zeros]), np.vstack([shared, zeros]))


def p_top(c: Candidates, profiles: Sequence[Profile], draws: int = DRAWS, seed: int = 0,
          top: int = TOP) -> np.ndarray:
    """P(rank <= TOP in its group) per row of C, over DRAWS draws of the estimated criteria."""
    rng = np.random.default_rng(seed)
    t = c.table
    values = t[list(RANKED)].to_numpy(float)
    ok = np.isfinite(values).all(axis=1) & (values[:, 1:4] > 0).all(axis=1) & (values[:, 0] > 0)
    out = np.zeros(len(t))
    shared_sd = c.shared_sd if c.shared_sd is not None else np.zeros_like(c.log_sd)
    common = rng.standard_normal((draws, len(RANKED)))  # one shared error per draw
    weights = {p.name: np.array([p.weights.get(k, 0.0) for k in RANKED]) for p in profiles}
    maximize = np.array([k in ("output_tokens_per_s_per_gpu", "goodput_rps", "capacity_rps")
                         for k in RANKED])
    for (_, _, profile), idx in t.groupby(list(GROUP), sort=False).indices.items():
        rows = idx[ok[idx]]
        if not len(rows) or profile not in weights:
            continue
        if len(rows) <= top:
            out[rows] = 1.0
            continue
        # One normal draw per row and criterion; throughput, cost and capacity move together
        # (cost is price / throughput, capacity x output tokens is throughput).
        z = rng.standard_normal((draws, len(rows), len(RANKED)))
        z = _tied(z)
        log_err = z * c.log_sd[rows][None] + _tied(common)[:, None, :] * shared_sd[rows][None]
        drawn = values[rows][None] * np.exp(log_err)
        scores = topsis_batch(drawn, maximize, weights[profile])
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(len(rows))[None].repeat(draws, 0), axis=1)
        out[rows] = (ranks < top).mean(axis=0)
    return out


def priorities(c: Candidates, profiles: Sequence[Profile], draws: int = DRAWS,
               seed: int = 0) -> pd.DataFrame:
    """Per unmeasured deployment: P(in some group's top 3) (`p_any_top3`), its highest P(top 3)
    in one group, the group that is and its estimated capacity there; sorted most likely
    needed first (ties: the higher single-group chance, then the higher capacity)."""
    p = p_top(c, profiles, draws, seed)
    t = c.table.assign(p_top3=p)
    t = t[~t["measured"].to_numpy(bool)]
    if t.empty:
        return pd.DataFrame(columns=["deployment", "p_any_top3", "p_top3", "group",
                                     "capacity_rps"])
    best = t.sort_values(["deployment", "p_top3", "capacity_rps"],
                         ascending=[True, False, False]).drop_duplicates("deployment")
    out = pd.DataFrame({
        "deployment": best["deployment"].astype(str).to_numpy(),
        "p_top3": best["p_top3"].to_numpy(float),
        "group": (best["model"].astype(str) + " / " + best["lengths"].astype(str) + " / "
                  + best["profile"].astype(str)).to_numpy(),
        "capacity_rps": best["capacity_rps"].to_numpy(float)})
    p_any = 1.0 - (1.0 - t["p_top3"]).groupby(t["deployment"].astype(str)).prod()
    out.insert(1, "p_any_top3", out["deployment"].map(p_any).to_numpy(float))
    return out.sort_values(["p_any_top3", "p_top3", "capacity_rps", "deployment"],
                           ascending=[False, False, False, True]).reset_index(drop=True)


def _tied(z: np.ndarray) -> np.ndarray:
    """Z with cost, goodput and capacity tied to throughput's draw (last axis: RANKED)."""
    z = z.copy()
    z[..., 3] = -z[..., 0]
    z[..., 4] = z[..., 5] = z[..., 0]
    return z


def _sd(est: pd.DataFrame, metric: str) -> np.ndarray:
    """The log-sd of METRIC's estimate from its 95% interval (0 where it has none)."""
    lo, hi = (pd.to_numeric(est[f"{metric}_{s}"], errors="coerce").to_numpy(float)
              for s in ("lo", "hi"))
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = (np.log(hi) - np.log(lo)) / (2 * Z)
    return np.where(np.isfinite(sd) & (sd > 0), sd, 0.0)
