"""Estimated operating points beside the measured ones in /v1/recommend, never mixed silently.

The estimates table (catalog/estimates.py, written to the store by the deployment_estimates
asset) holds the calibrated roofline of every deployment of every matrix, with 95% prediction
intervals. Here it meets the measured catalog, under two rules:

- **Estimated-only.** An estimate is shown only for a deployment the catalog has no row for on
  that model × length profile × profile (`measured` false in the table and absent from the
  snapshot's deployment table): a measured deployment, ranked or not, speaks for itself.
- **Never above a measured one.** With `estimates=include` the estimated-only deployments follow
  every measured one in `items`, each marked `source: estimate` with `rank: null` and its
  intervals; `rank_if_measured` says where its point estimate would rank, in words a reader sees,
  and never reorders the list. By default (`estimates=exclude`) they are only counted.

An estimate *might beat the top pick* when, at the optimistic end of every interval at once
(capacity and throughput at their high bounds, p99s at their low bounds, cost at the high
throughput), its TOPSIS score under the profile's weights, scored together with the group's
ranked measured deployments, is above the top pick's. With no measured top pick, every
estimated-only deployment that matches counts.
"""

from __future__ import annotations

import io
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catalog import store
from catalog.errors import InvalidParameter
from catalog.params import Param
from catalog.topsis import topsis_batch
from servecat.profiles import DEPLOYMENT_CRITERIA, QUALITY_CRITERIA
from servecat.store import ESTIMATES_PATH
from servecat.values import plain

log = logging.getLogger("servecat.api")

MODES = ("exclude", "include")
ESTIMATES_PARAM = Param(
    "estimates", default="exclude",
    description="`exclude` (default): measured deployments only, and `estimates.might_beat_top` "
                "counts the estimated-only ones whose optimistic bounds beat the top pick; "
                "`include`: every estimated-only deployment that matches is also listed, after "
                "every measured one (up to `limit` of them), each `source: estimate` with "
                "`rank: null` and its 95% intervals")
FIGURES = (*(f"{m}{s}" for m in ("capacity_rps", "output_tokens_per_s", "ttft_p99_ms",
                                  "tpot_p99_ms") for s in ("", "_lo", "_hi")),
           "cost_per_mtok_on_demand")
NEEDED = ("deployment", "model", "lengths", "profile", "hardware", "engine", "quantization",
          *FIGURES)
EMPTY = np.zeros(0, int)


def estimates_mode(raw: str) -> bool:
    """True for `include`, False for `exclude`; 422 naming the parameter otherwise."""
    if raw not in MODES:
        raise InvalidParameter(f"invalid parameter estimates: {raw[:40]!r} is not one of "
                               f"{', '.join(MODES)}", "estimates")
    return raw == "include"


def replicas(demand: float, capacity: np.ndarray) -> np.ndarray:
    """Replicas of CAPACITY req/s each that serve DEMAND (NaN without capacity): the one sizing
    rule, for measured and estimated operating points alike."""
    # The tiny shrink keeps an exact multiple (12 / 4 = 3.0000000000000004) from one replica more.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = demand / capacity
        return np.where(capacity > 0, np.ceil(ratio * (1 - 1e-12)), np.nan)


class EstimatePoints:
    """One estimates table: its estimate rows grouped by model × length profile × profile, and
    their scores against each deployment table they were asked about (kept while it lives)."""

    def __init__(self, frame: pd.DataFrame, version: str = ""):
        missing = [c for c in NEEDED if c not in frame]
        if missing:
            raise ValueError(f"estimates table lacks column(s) {', '.join(missing)}; rebuild it: "
                             f"`dagster asset materialize --select deployment_estimates`")
        keep = np.ones(len(frame), bool)
        if "measured" in frame:
            keep &= ~frame["measured"].fillna(False).astype(bool).to_numpy()
        if "source" in frame:
            keep = keep & (frame["source"].astype(str) == "estimate")
        df = frame[keep].reset_index(drop=True)
        self.frame, self.version = df, version
        self.fit = sorted(df["fit"].dropna().astype(str).unique()) if "fit" in df else []
        self.groups = {tuple(map(str, k)): np.asarray(v) for k, v in
                       df.groupby(["model", "lengths", "profile"], sort=False).indices.items()}
        self._scored: weakref.WeakKeyDictionary[Any, dict] = weakref.WeakKeyDictionary()

    def group(self, deployments: Any, key: tuple[str, str, str]) -> Candidates:
        """The estimated-only candidates of KEY, scored against DEPLOYMENTS' ranked rows; one
        computation per deployment table and key."""
        cache = self._scored.setdefault(deployments, {})
        found = cache.get(key)
        if found is None:
            found = cache[key] = Candidates.of(self.frame, self.groups.get(key, EMPTY),
                                               deployments, key)
        return found


@dataclass(frozen=True, slots=True)
class Candidates:
    """Estimated-only deployments of one model × length profile × profile: their figures (per
    replica), the scores their optimistic and point values get among the ranked measured
    deployments (`*_self`, and the measured ones' own in that company, E × n), and the ranked
    measured deployments in rank order."""

    rows: pd.DataFrame
    v: dict[str, np.ndarray]
    opt_self: np.ndarray
    opt_measured: np.ndarray
    point_self: np.ndarray
    point_measured: np.ndarray
    measured: dict[str, int]   # ranked deployment -> its column in *_measured

    @classmethod
    def of(cls, frame: pd.DataFrame, rows: np.ndarray, deployments: Any,
           key: tuple[str, str, str]) -> Candidates:
        df = deployments.frame
        mine = deployments.groups.get(key, EMPTY)
        est = frame.iloc[rows]
        est = est[~est["deployment"].astype(str).isin(set(df["deployment"].astype(str).iloc[mine]))]
        v = _figures(est, deployments.prices)
        # One whose optimistic capacity is none does not hold the SLOs even then: left out.
        ok = v["capacity_rps_hi"] > 0
        est, v = est[ok].reset_index(drop=True), {k: a[ok] for k, a in v.items()}
        est["hardware_key"] = (est["hardware"].astype(str) + "x"
                               + pd.Series(v["gpu_count"]).astype(int).astype(str))
        ranked = mine[np.isfinite(deployments.arrays["rank"][mine])]   # already in rank order
        weights = (deployments.profiles.get(key[2]) or {}).get("weights") or {}
        crit = [c for c in DEPLOYMENT_CRITERIA if c not in QUALITY_CRITERIA
                and float(weights.get(c) or 0) > 0]
        maximize = [DEPLOYMENT_CRITERIA[c] == "max" for c in crit]
        w = [float(weights[c]) for c in crit]
        measured = np.column_stack([
            pd.to_numeric(df[c], errors="coerce").to_numpy(float, na_value=np.nan)[ranked]
            if c in df else np.full(len(ranked), np.nan) for c in crit]
        ) if crit else np.zeros((len(ranked), 0))
        opt_self, opt_m = _scores(measured, _criteria(v, crit, "opt"), maximize, w)
        point_self, point_m = _scores(measured, _criteria(v, crit, "point"), maximize, w)
        names = df["deployment"].astype(str).to_numpy()[ranked]
        return cls(est, v, opt_self, opt_m, point_self, point_m,
                   {n: i for i, n in enumerate(names)})


def _figures(est: pd.DataFrame, prices: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per estimate row: the figures with their bounds, GPUs and $/hour of one replica."""
    def num(c: str) -> np.ndarray:
        return pd.to_numeric(est[c], errors="coerce").to_numpy(float, na_value=np.nan)

    v = {c: num(c) for c in FIGURES}
    tps, cost = v["output_tokens_per_s"], v["cost_per_mtok_on_demand"]
    usd = cost * tps * 3600.0 / 1e6   # the table's cost is $/h ÷ tokens/h: $/h back from it
    hw = est["hardware"].astype(str)
    per_gpu = hw.map(lambda h: (prices.get(h) or {}).get("on_demand_usd_per_hour")).to_numpy(float)
    spot = hw.map(lambda h: (prices.get(h) or {}).get("spot_usd_per_hour")).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Older tables carry no gpu_count: the price of the replica says how many GPUs it holds.
        derived = np.where(per_gpu > 0, np.round(usd / per_gpu), np.nan)
        gpus = num("gpu_count") if "gpu_count" in est else derived
        gpus = np.maximum(np.nan_to_num(gpus, nan=1.0), 1.0)
        usd = np.where(np.isfinite(per_gpu), per_gpu * gpus, usd)
        v["gpu_count"], v["usd_per_hour_on_demand"] = gpus, usd
        v["usd_per_hour_spot"] = spot * gpus
        for s in ("", "_lo", "_hi"):
            t = v[f"output_tokens_per_s{s}"]
            v[f"output_tokens_per_s_per_gpu{s}"] = t / gpus
            tokens = np.where(t > 0, t * 3600.0, np.nan)
            # More tokens for the same $/hour: the cost's low bound is at the throughput's high.
            bound = {"": "", "_lo": "_hi", "_hi": "_lo"}[s]
            v[f"cost_per_mtok_on_demand{bound}"] = usd / tokens * 1e6
            v[f"cost_per_mtok_spot{bound}"] = v["usd_per_hour_spot"] / tokens * 1e6
    return v


# Each criterion an estimate is scored on: its point column and its optimistic bound. Goodput
# at the operating point is at most the capacity, so the capacity stands in for it.
SCORED = {"output_tokens_per_s_per_gpu": ("output_tokens_per_s_per_gpu", "_hi"),
          "ttft_p99_ms": ("ttft_p99_ms", "_lo"), "tpot_p99_ms": ("tpot_p99_ms", "_lo"),
          "cost_per_mtok_on_demand": ("cost_per_mtok_on_demand", "_lo"),
          "goodput_rps": ("capacity_rps", "_hi"), "capacity_rps": ("capacity_rps", "_hi")}


def _criteria(v: dict[str, np.ndarray], crit: list[str], which: str) -> np.ndarray:
    n = len(v["capacity_rps"])
    cols = [v[SCORED[c][0] + (SCORED[c][1] if which == "opt" else "")] for c in crit]
    return np.column_stack(cols) if cols else np.zeros((n, 0))


def _scores(measured: np.ndarray, est: np.ndarray, maximize: list[bool],
            weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """TOPSIS of each estimate row scored with the measured rows: (its score (E,), theirs (E, n))."""
    e, n = len(est), len(measured)
    batch = np.concatenate([np.broadcast_to(measured, (e, n, measured.shape[1])),
                            est[:, None, :]], axis=1)
    s = topsis_batch(batch, maximize, weights) if e else np.zeros((0, n + 1))
    return s[:, n], s[:, :n]


def add_estimates(deployments: Any, body: dict[str, Any], include: bool,
                  limit: int) -> dict[str, Any]:
    """BODY (a /v1/recommend answer of DEPLOYMENTS) with its `estimates` summary and, when
    INCLUDE, the estimated-only deployments appended to `items` after every measured one."""
    source = deployments.estimates
    points = source.current if source is not None else None
    summary: dict[str, Any] = {"included": include, "available": points is not None,
                               "fit": points.fit if points else [], "matching": 0,
                               "might_beat_top": 0, "listed": 0, "reason": None}
    body["estimates"] = summary
    filters = body["filters"]
    info = deployments.profiles.get(body["profile"], {})
    if points is None:
        error = source.error if source is not None else None
        summary["reason"] = (f"estimates table unreadable: {error}" if error else
                             f"no estimates in the store ({ESTIMATES_PATH}): materialize the "
                             f"deployment_estimates asset")
        return body
    if (filters["max_kl"] is not None or filters["min_agreement"] is not None
            or info.get("max_quality_loss")
            or any(float((info.get("weights") or {}).get(c) or 0) > 0 for c in QUALITY_CRITERIA)):
        summary["reason"] = ("this query needs a quality figure (max_kl, min_agreement, or the "
                             "profile's quality limits or weight) and an estimate has none")
        return body
    key = (body["model"], body["traffic"]["lengths"], body["profile"])
    c = points.group(deployments, key)
    keep, sizing = _kept(c, filters, body["demand_rps"])
    top = c.measured.get(body["items"][0]["deployment"]) if body["items"] else None
    # With nothing measured to beat, each one might be the best.
    beat = np.ones(len(c.rows), bool) if top is None else c.opt_self > c.opt_measured[:, top]
    rank = 1 + np.sum(c.point_measured > c.point_self[:, None], axis=1)
    rank = np.where(np.isfinite(c.point_self), rank, np.nan)
    summary["matching"] = int(keep.sum())
    summary["might_beat_top"] = int((keep & beat).sum())
    if not summary["matching"]:
        summary["reason"] = "no estimated-only deployment matches this query and its filters"
    if include:
        at = np.flatnonzero(keep)
        names = c.rows["deployment"].astype(str).to_numpy()[at]
        at = at[np.lexsort((names, np.nan_to_num(rank[at], nan=np.inf), ~beat[at]))][:limit]
        body["items"] = [*body["items"], *(_item(c, i, bool(beat[i]), rank[i], sizing,
                                                  body["demand_rps"]) for i in at)]
        summary["listed"] = len(at)
    return body


def _kept(c: Candidates, filters: dict[str, Any],
          demand: float | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Which candidates pass the query's filters and limits, and their sizing for DEMAND."""
    rows, v = c.rows, c.v
    keep = np.ones(len(rows), bool)
    gpus_each = v["gpu_count"]
    for name in ("hardware", "engine", "quantization"):
        value = filters.get(name)
        if value is not None:
            hit = rows[name].astype(str).to_numpy() == value
            if name == "hardware":   # a type (h100) or a type with its count (h100x2)
                hit |= rows["hardware_key"].to_numpy() == value
            keep &= hit
    n = replicas(demand, v["capacity_rps"]) if demand is not None else np.ones(len(rows))
    sizing = {"replicas": n, "gpus": n * gpus_each,
              "usd_per_hour_on_demand": n * v["usd_per_hour_on_demand"],
              "usd_per_hour_spot": n * v["usd_per_hour_spot"],
              "replicas_at_capacity_lo": (replicas(demand, v["capacity_rps_lo"])
                                          if demand is not None else np.full(len(rows), np.nan))}
    for name, values in (("max_gpus", sizing["gpus"]),
                         ("max_usd_per_hour", sizing["usd_per_hour_on_demand"])):
        if filters.get(name) is not None:
            keep &= values <= filters[name]   # NaN fails: no figure is not within a limit
    return keep, sizing


def _item(c: Candidates, i: int, beat: bool, rank: float, sizing: dict[str, np.ndarray],
          demand: float | None) -> dict[str, Any]:
    """Candidate I as /v1/recommend lists it: marked, unranked, every figure with its bounds."""
    r = {k: plain(x) for k, x in c.rows.iloc[i].items()}
    v = {k: plain(a[i]) for k, a in c.v.items()}
    at = None if np.isnan(rank) else int(rank)
    note = ("estimate, not measured: listed after every measured deployment and not ranked; "
            + (f"its point estimate would rank #{at}" if at else "no point estimate to rank")
            + ("; at its optimistic bounds it would beat the top pick" if beat else ""))
    op = {k + s: v[k + s] for k in ("output_tokens_per_s", "output_tokens_per_s_per_gpu",
                                "ttft_p99_ms", "tpot_p99_ms", "cost_per_mtok_on_demand",
                                "cost_per_mtok_spot") for s in ("", "_lo", "_hi")}
    item = {"source": "estimate", "rank": None, "rank_if_measured": at, "might_beat_top": beat,
            "model": r["model"], "lengths": r["lengths"], "profile": r["profile"],
            "deployment": r["deployment"], "hardware": r["hardware"],
            "gpu_count": int(v["gpu_count"]), "engine": r["engine"],
            "quantization": r["quantization"],
            **{k: r.get(k) for k in ("tensor_parallel_size", "max_num_seqs",
                                     "max_num_batched_tokens", "engine_args")},
            "capacity": {"rps": v["capacity_rps"], "rps_lo": v["capacity_rps_lo"],
                         "rps_hi": v["capacity_rps_hi"], "status": "estimated",
                         "lower_bound": False, "limiting": r.get("capacity_limiting"),
                         "reason": "estimated: calibrated roofline, 95% prediction interval"},
            "operating_point": {**op, "usd_per_hour_on_demand": v["usd_per_hour_on_demand"],
                                "usd_per_hour_spot": v["usd_per_hour_spot"],
                                "error_rate": None, "goodput_rps": None},
            "pareto": None, "topsis_score": None, "p_first": None, "p_top3": None,
            "mean_rank": None, "rank_note": note, "fit": r.get("fit"),
            "quality": {"status": "not measured", "reason": "an estimate has no quality figure",
                        **dict.fromkeys(("reference", "probe_version", "kl", "agreement",
                                         "perplexity_ratio", "perplexity", "kl_positions"))}}
    if demand is not None:
        s = {k: plain(a[i]) for k, a in sizing.items()}
        for k in ("replicas", "gpus", "replicas_at_capacity_lo"):
            if s[k] is not None and abs(s[k]) < 2**53:
                s[k] = int(s[k])
        item["serving"] = {**s, "upper_bound": False}
    return item


class EstimatesHolder:
    """The estimates table under a store root, reloaded whole when its file changes; a missing
    or unreadable file never stops the measured catalog (the reason is kept in `error`)."""

    def __init__(self, root: str | Path):
        self.root = root
        self.current: EstimatePoints | None = None
        self.version: str | None = None
        self.error: str | None = None

    def refresh(self) -> bool:
        """Load the table if its file changed since the last look; True when it did."""
        try:
            tag = store.version(self.root, ESTIMATES_PATH)
            if tag == self.version:
                return False
            data = None if tag is None else store.read_bytes(self.root, ESTIMATES_PATH)
            self.version = tag   # read: a table that does not parse is tried again once changed
            self.current = (None if data is None else
                            EstimatePoints(pd.read_parquet(io.BytesIO(data)), tag or ""))
            self.error = None
            return True
        except Exception as exc:  # keep serving what was loaded; the answers say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("estimates reload failed: %s", self.error)
            return False
