"""Deployments at their operating points, per model × length profile × profile: what the catalog
ranks (DESIGN.md, "What the catalog ranks").

Per deployment × length profile × profile: the capacity under the profile's SLOs
(catalog.capacity) with a bootstrap interval over its requests (catalog.resample), the operating
point there with its cost, then over the deployments of one model × length profile × profile a
Pareto flag, a TOPSIS score and rank, and from the same B draws P(#1) and P(top 3). Load levels
are never ranked against each other: they only trace a deployment's curve (the `levels` table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.quality import ProbeRun
from catalog.build import check_summary
from catalog.capacity import (
    LOADS,
    NOT_LEVELS,
    Capacity,
    at_crossing,
    capacity_of,
    crossing,
    quantities,
)
from catalog.confidence import row_percentiles
from catalog.config import Hardware, Profile, as_hardware, as_profiles
from catalog.cost import add_cost
from catalog.quality import QUALITY_COLUMNS, join_quality, quality_table
from catalog.quality_limits import quality_exclusions
from catalog.ranking import rank_deployments
from catalog.resample import LevelDraws, level_draws
from catalog.slo import RequestOutcomes, slo_attainment
from servecat.profiles import DEPLOYMENT_CRITERIA, QUALITY_CRITERIA
from servecat.slo import Slo, holds, level_columns

DRAWS = 200
LEVEL = 0.95
# The kind of levels a capacity is read from when a deployment measured both: the better status
# wins; between two brackets the open loop (rate), because real traffic queues and a closed loop
# hides that queueing; between two lower bounds the higher one.
STATUS_ORDER = {"bracketed": 0, "lower_bound": 1, "none": 2}
DEPLOYMENT_COLUMNS = ("model", "deployment", "hardware", "hardware_type", "gpu_count", "engine",
                      "quantization", "tensor_parallel_size", "max_num_seqs",
                      "max_num_batched_tokens", "engine_args")
LEVEL_COLUMNS = ("config_id", "model", "deployment", "lengths", "load", "concurrency", "rate",
                 "status", "num_requests", "num_completed", "error_rate", "requests_per_s",
                 "output_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_p50_ms",
                 "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_mean_ms",
                 "cost_per_mtok_on_demand")


@dataclass(frozen=True, slots=True)
class DeploymentCatalog:
    """The deployment table (one row per deployment × length profile × profile) and the measured
    load levels under it (one row per config, with p99 intervals)."""

    deployments: pd.DataFrame
    levels: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The side tables a catalog snapshot stores beside the per-config rows."""
        return {"deployments": self.deployments, "levels": self.levels}


def build_deployments(summary: pd.DataFrame, requests: pd.DataFrame | None,
                      hardware: Sequence[Hardware] | str | Path,
                      profiles: Sequence[Profile] | str | Path, draws: int = DRAWS,
                      seed: int = 0,
                      probes: Mapping[str, ProbeRun] | None = None) -> DeploymentCatalog:
    """Capacity, operating point, cost, quality, Pareto flag, TOPSIS rank and P(#1) / P(top 3)
    of every deployment × length profile × profile; deployments with no capacity, or turned away
    by their profile's quality demands, are kept unranked with the reason.

    REQUESTS (config_id, ttft_ms, tpot_ms, ok) gives the bootstrap; without it there are no
    intervals and no rank probabilities. PROBES (deployment -> stored probe run, see
    catalog.quality.stored_probe_runs) gives the quality_* columns; a deployment without one is
    `not measured`. Seeded: the same inputs give the same table.
    """
    check_summary(summary)
    hardware, profiles = as_hardware(hardware), as_profiles(profiles)
    configs = _measured(summary, hardware)
    rng = np.random.default_rng(seed)
    outcomes = (RequestOutcomes.align(configs["config_id"], requests)
                if requests is not None else None)
    goodput = [slo_attainment(configs, outcomes, p)[1] for p in profiles]
    rows, criteria, levels, bootstrapped = [], [], [], False
    for _, part in configs.groupby("model", sort=True):  # one per model: bounds the draws' memory
        at = part["_pos"].to_numpy()
        part = part.reset_index(drop=True)
        drawn = _draws(part, requests, draws, rng)
        bootstrapped |= bool(drawn.n.any())
        r, c = _operating_points(part, drawn, [g[at] for g in goodput], profiles)
        rows += r
        criteria.append(c)
        levels.append(_levels(part, drawn))
    table = pd.DataFrame(rows, columns=None if rows else _COLUMNS)
    table = _with_lengths_tokens(table, configs)
    # Skipped configs too: a deployment probed but never measured may still be the reference.
    table = join_quality(table, quality_table(probes or {}, summary))
    per_draw = _with_quality(np.concatenate(criteria), table) if bootstrapped else None
    rank_deployments(table, per_draw, DEPLOYMENT_CRITERIA, profiles, rng,
                     excluded=quality_exclusions(table, profiles))
    table.attrs["profiles"] = [p.to_dict() for p in profiles]
    table.attrs["hardware"] = [h.to_dict() for h in hardware]
    table.attrs["draws"] = draws if bootstrapped else 0
    level_table = (pd.concat(levels, ignore_index=True) if levels
                   else _levels(configs, _draws(configs, None, draws, rng)))
    return DeploymentCatalog(table, level_table)


def _with_quality(criteria: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """CRITERIA (rows, B, K) with the quality criteria filled from TABLE: the same in every
    draw, since the bootstrap resamples requests, not probe positions."""
    for k, name in enumerate(DEPLOYMENT_CRITERIA):
        if name in QUALITY_CRITERIA:
            criteria[:, :, k] = _column(table, name)[:, None]
    return criteria


def _draws(configs: pd.DataFrame, requests: pd.DataFrame | None, draws: int,
           rng: np.random.Generator) -> LevelDraws:
    """Bootstrap draws of CONFIGS' levels; without requests one draw of NaN (no intervals)."""
    if requests is not None and len(configs):
        return level_draws(configs["config_id"].to_numpy(), requests, draws, rng)
    empty = np.zeros(len(configs), int)
    return LevelDraws(np.full((1, len(configs), 3), np.nan), empty, empty)


def _measured(summary: pd.DataFrame, hardware: Sequence[Hardware]) -> pd.DataFrame:
    """The measured levels (skipped configs dropped), priced, with their row position."""
    configs = summary.reset_index(drop=True)
    status = (configs["status"] if "status" in configs else pd.Series("ok", configs.index))
    configs = configs.assign(status=status.fillna("ok").astype(str))
    configs = configs[~configs["status"].isin(NOT_LEVELS)].reset_index(drop=True)
    configs = add_cost(configs, hardware)
    configs["_pos"] = np.arange(len(configs))
    return configs


@dataclass(frozen=True, slots=True)
class _Measured:
    """The measured levels as arrays, once for all groups: what a capacity is computed from."""

    x: dict[str, np.ndarray]         # load value per level, by kind
    q: dict[str, np.ndarray]         # (L, 4) capacity.QUANTITIES per level, by kind
    point: np.ndarray                # (L, 3) summary p99 TTFT, p99 TPOT, error rate
    values: np.ndarray               # (B, L, 3) the same per bootstrap draw
    requests: np.ndarray             # (L,) num_requests
    drawn: LevelDraws


def _operating_points(configs: pd.DataFrame, drawn: LevelDraws, goodput: list[np.ndarray],
                      profiles: Sequence[Profile]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """One row per deployment × length profile × profile, and its (B, K) criteria per draw."""
    point = np.stack(level_columns(configs), axis=-1)
    # A level without requests keeps its summary's values in every draw.
    values = np.where((drawn.n > 0)[None, :, None], drawn.values, point[None])
    lv = _Measured(x={k: _column(configs, k) for k in LOADS},
                   q={k: quantities(configs, k) for k in LOADS}, point=point, values=values,
                   requests=np.nan_to_num(_column(configs, "num_requests")).astype(int),
                   drawn=drawn)
    identity = (configs.drop_duplicates("deployment")
                .set_index("deployment", drop=False)[[c for c in DEPLOYMENT_COLUMNS if c in configs]]
                .to_dict("index"))
    load = configs["load"].astype(str).to_numpy()
    x = np.where(load == "rate", lv.x["rate"], lv.x["concurrency"])
    dep, lengths = configs["deployment"].astype(str).to_numpy(), configs["lengths"].to_numpy()
    order = np.lexsort((x, load, configs["lengths"].astype(str).to_numpy(), dep))
    rows, criteria = [], []
    for pos in _runs(order, dep, configs["lengths"].astype(str).to_numpy()):
        # One iteration per deployment × length profile; each splits into at most two kinds.
        kinds = [(str(k), pos[load[pos] == k]) for k in dict.fromkeys(load[pos]) if k in LOADS]
        ident = identity[dep[pos[0]]]
        gpus = _gpus(ident.get("gpu_count"))
        prices = (float(configs["usd_per_hour_on_demand"].iat[pos[0]]),
                  float(configs["usd_per_hour_spot"].iat[pos[0]]))
        for i, profile in enumerate(profiles):
            slo = Slo.of(profile)
            best = None
            for kind, at in kinds:
                q = lv.q[kind][at].copy()
                q[:, 3] = goodput[i][at]
                cap = capacity_of(kind, lv.x[kind][at], lv.point[at], q, slo, gpus, *prices)
                # Two lower bounds: the higher is the tighter; two brackets: the open loop.
                key = (STATUS_ORDER[cap.status],
                       -cap.rps if cap.lower_bound else float(kind != "rate"))
                if best is None or key < best[0]:
                    best = (key, kind, at, q, cap)
            if best is None:
                continue
            _, kind, at, q, cap = best
            row, draw = _row(ident, lengths[pos[0]], profile, slo, kind, at, q, cap, lv, gpus)
            rows.append(row)
            criteria.append(draw)
    width = len(DEPLOYMENT_CRITERIA)
    stacked = np.stack(criteria) if criteria else np.zeros((0, values.shape[0], width))
    return rows, stacked


def _gpus(value: Any) -> int:
    """A deployment's GPU count, at least 1 (the CPU host and unknown counts are one machine)."""
    count = pd.to_numeric(value, errors="coerce")
    return max(int(count), 1) if np.isfinite(count) else 1


def _runs(order: np.ndarray, *keys: np.ndarray) -> list[np.ndarray]:
    """ORDER split where any of KEYS (taken in ORDER) changes."""
    change = np.zeros(max(len(order) - 1, 0), bool)
    for k in keys:
        change |= k[order][1:] != k[order][:-1]
    return np.split(order, np.flatnonzero(change) + 1) if len(order) else []


def _row(identity: dict[str, Any], lengths: str, profile: Profile, slo: Slo, kind: str,
         at: np.ndarray, q: np.ndarray, cap: Capacity, lv: _Measured,
         gpus: int) -> tuple[dict[str, Any], np.ndarray]:
    """The deployment row of one capacity (levels AT, load-sorted), and its criteria per draw."""
    c = crossing(lv.values[:, at], slo)
    rps, conc, tps, good = (at_crossing(c, q[:, j]) for j in range(4))
    ttft, tpot = (at_crossing(c, lv.values[:, at, j]) for j in range(2))
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(tps > 0, cap.usd_per_hour_on_demand / (tps * 3600.0) * 1e6, np.nan)
    per_draw = {"output_tokens_per_s_per_gpu": tps / gpus, "ttft_p99_ms": ttft,
                "tpot_p99_ms": tpot, "cost_per_mtok_on_demand": cost, "goodput_rps": good,
                "capacity_rps": rps}
    unknown = np.full(len(rps), np.nan)  # quality: filled in after the join (_with_quality)
    draw = np.stack([per_draw.get(k, unknown) for k in DEPLOYMENT_CRITERIA], axis=-1)
    tail = (1.0 - LEVEL) / 2.0
    n_boot = int(lv.drawn.n[at].sum())
    # A draw with no capacity counts as 0 req/s (catalog.confidence.capacity_interval's rule).
    bounds = (np.quantile(np.nan_to_num(np.stack([rps, conc]), nan=0.0), [tail, 1 - tail], axis=1)
              if n_boot else np.full((2, 2), np.nan))
    (rps_lo, conc_lo), (rps_hi, conc_hi) = bounds.tolist()
    requests = lv.requests[at]
    held = int(np.count_nonzero(np.cumsum(~holds(*lv.point[at].T, slo)) == 0))
    op = cap.to_dict()
    row = {
        **identity, "gpu_count": gpus, "lengths": lengths, "profile": profile.name,
        "slo_ttft_p99_ms": slo.ttft_p99_ms, "slo_tpot_p99_ms": slo.tpot_p99_ms,
        "slo_max_error_rate": slo.max_error_rate, "load": kind,
        "capacity_status": cap.status, "capacity_rps": cap.rps, "capacity_rps_lo": rps_lo,
        "capacity_rps_hi": rps_hi, "capacity_concurrency": cap.concurrency,
        "capacity_concurrency_lo": conc_lo, "capacity_concurrency_hi": conc_hi,
        "capacity_lower_bound": cap.lower_bound, "capacity_non_monotone": cap.non_monotone,
        "capacity_share_lower_bound": float(np.mean(c.held == len(at))) if n_boot else np.nan,
        "capacity_share_none": float(np.mean(c.held == 0)) if n_boot else np.nan,
        "capacity_limiting": op["limiting"], "capacity_reason": cap.reason,
        "pass_level": cap.pass_level, "fail_level": cap.fail_level, "pass_rps": cap.pass_rps,
        "fail_rps": cap.fail_rps, "levels": cap.levels, "requests": int(requests.sum()),
        "pass_requests": int(requests[held - 1]) if held > 0 else 0,
        "fail_requests": int(requests[held]) if held < len(requests) else 0,
        "bootstrap_requests": n_boot, "draws": lv.values.shape[0] if n_boot else 0,
        **{k: op[k] for k in ("output_tokens_per_s", "output_tokens_per_s_per_gpu",
                              "ttft_p99_ms", "tpot_p99_ms", "error_rate", "goodput_rps",
                              "usd_per_hour_on_demand", "usd_per_hour_spot",
                              "cost_per_mtok_on_demand", "cost_per_mtok_spot")},
    }
    return row, draw


def _with_lengths_tokens(table: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """Add each model × length profile's mean input and output tokens (measured, else asked)."""
    tokens = configs[["model", "lengths"]].copy()
    for side in ("input", "output"):
        measured = _column(configs, f"mean_{side}_tokens")
        tokens[side] = np.where(np.isfinite(measured), measured, _column(configs, f"{side}_tokens"))
    means = tokens.groupby(["model", "lengths"], dropna=False)[["input", "output"]].mean()
    means.columns = ["lengths_input_tokens", "lengths_output_tokens"]
    return table.join(means, on=["model", "lengths"])


def _levels(configs: pd.DataFrame, drawn: LevelDraws) -> pd.DataFrame:
    """The measured load levels (the curves): summary values, p99 intervals over the draws, n."""
    out = configs[[c for c in LEVEL_COLUMNS if c in configs]].copy()
    tail = (1.0 - LEVEL) / 2.0
    has = drawn.n > 0
    for j, metric in enumerate(("ttft_p99_ms", "tpot_p99_ms")):
        lo, hi = np.full(len(out), np.nan), np.full(len(out), np.nan)
        # Draws sorted per level, NaN (no successful request drawn) last and ignored.
        per_level = np.sort(drawn.values[:, has, j].T, axis=1)
        lo[has], hi[has] = row_percentiles(per_level, [100 * tail, 100 * (1 - tail)]).T
        out.insert(out.columns.get_loc(metric) + 1, f"{metric}_lo", lo)
        out.insert(out.columns.get_loc(metric) + 2, f"{metric}_hi", hi)
    out["n"], out["n_ok"] = drawn.n, drawn.n_ok
    x = np.where(out["load"] == "rate", _column(out, "rate"), _column(out, "concurrency"))
    order = np.lexsort((x, out["load"].astype(str), out["lengths"].astype(str),
                        out["deployment"].astype(str)))
    return out.iloc[order].reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)


_COLUMNS = (*DEPLOYMENT_COLUMNS, "lengths", "profile", "capacity_status", "capacity_rps",
            "capacity_lower_bound", "capacity_reason",
            *(c for c in DEPLOYMENT_CRITERIA if c not in QUALITY_COLUMNS))
