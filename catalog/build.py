"""build_catalog: summary (+ requests) × hardware prices × profiles -> one row per (config, profile)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from catalog.config import CRITERIA, Hardware, Profile, as_hardware, as_profiles
from catalog.cost import add_cost
from catalog.pareto import pareto_mask_grouped
from catalog.slo import RequestOutcomes, meets_slo, slo_attainment
from catalog.topsis import topsis
from servecat.results import SUMMARY_COLUMNS

# Pareto criteria (same for every profile): throughput per GPU ↑, p99 TTFT ↓, p99 TPOT ↓, cost ↓.
PARETO_CRITERIA = {"output_tokens_per_s_per_gpu": True, "ttft_p99_ms": False,
                   "tpot_p99_ms": False, "cost_per_mtok_on_demand": False}


def check_summary(summary: pd.DataFrame) -> None:
    """Raise ValueError naming the missing columns or duplicated config_ids of a summary table."""
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary table: missing column(s) {', '.join(missing)}")
    dup = summary["config_id"][summary["config_id"].duplicated()]
    if len(dup):
        raise ValueError(f"summary table: config_id not unique: {', '.join(map(str, dup[:5]))}")


def _configs(summary: pd.DataFrame, hardware: Sequence[Hardware]) -> pd.DataFrame:
    configs = summary.reset_index(drop=True)
    if "status" not in configs:
        configs = configs.assign(status="ok")
    if "skip_reason" not in configs:
        configs = configs.assign(skip_reason=None)
    configs["status"] = configs["status"].fillna("ok").astype(str)
    configs = add_cost(configs, hardware)
    configs["pareto"] = pareto_mask_grouped(
        np.where(_rankable(configs)[:, None],
                 configs[list(PARETO_CRITERIA)].to_numpy(float), np.nan),
        list(PARETO_CRITERIA.values()), configs["model"].to_numpy())
    return configs


def _rankable(configs: pd.DataFrame) -> np.ndarray:
    """Status ok, some requests completed, and every Pareto/TOPSIS criterion usable."""
    ok = (configs["status"] == "ok").to_numpy() & (configs["num_completed"].to_numpy(float) > 0)
    for col, maximize in PARETO_CRITERIA.items():
        v = configs[col].to_numpy(float)
        ok &= np.isfinite(v) & ((v >= 0) if maximize else (v > 0))
    return ok


def _not_ranked_note(configs: pd.DataFrame) -> np.ndarray:
    note = np.full(len(configs), "not ranked: a ranking criterion is zero or missing", dtype=object)
    checks = [  # later checks override earlier ones: the most basic reason wins
        (~np.isfinite(configs["tpot_p99_ms"].to_numpy(float)), "not ranked: no p99 TPOT"),
        (~np.isfinite(configs["ttft_p99_ms"].to_numpy(float)), "not ranked: no p99 TTFT"),
        (~(configs["output_tokens_per_s"].to_numpy(float) > 0), "not ranked: no output tokens"),
        (configs["hardware_type"].isna().to_numpy(),
         "not ranked: hardware has no price in hardware.yaml"),
        (~(configs["num_completed"].to_numpy(float) > 0), "not ranked: no request completed"),
    ]
    for bad, text in checks:
        note = np.where(bad, text, note)
    reason = configs["skip_reason"].fillna("").astype(str).to_numpy(object)
    status = configs["status"].to_numpy(object)
    status_note = "not ranked: " + status + np.where(reason != "", ": " + reason, "")
    return np.where(status != "ok", status_note, note)


def build_catalog(summary: pd.DataFrame, requests: pd.DataFrame | None,
                  hardware: Sequence[Hardware] | str | Path,
                  profiles: Sequence[Profile] | str | Path) -> pd.DataFrame:
    """One row per (config, profile): metrics, cost, SLO attainment, goodput, Pareto flag, TOPSIS
    score and rank (1..n per model × profile; configs meeting the SLOs first, then the rest).

    HARDWARE and PROFILES are loaded lists or YAML paths. REQUESTS (config_id, ttft_ms, tpot_ms,
    ok) is optional; without it SLO attainment is a lower bound from the summary's percentiles.
    Failed, skipped and unusable configs are kept with rank NaN and a rank_note saying why.
    """
    check_summary(summary)
    hardware, profiles = as_hardware(hardware), as_profiles(profiles)
    configs = _configs(summary, hardware)
    outcomes = None if requests is None else RequestOutcomes.align(configs["config_id"], requests)
    rankable = _rankable(configs)
    not_ranked = _not_ranked_note(configs)

    n, p = len(configs), len(profiles)
    long = configs.iloc[np.tile(np.arange(n), p)].reset_index(drop=True)
    long.insert(long.columns.get_loc("model") + 1, "profile", np.repeat([x.name for x in profiles], n))
    per_profile = [slo_attainment(configs, outcomes, x) for x in profiles]
    long["slo_ttft_p99_ms"] = np.repeat([x.ttft_p99_ms for x in profiles], n)
    long["slo_tpot_p99_ms"] = np.repeat([x.tpot_p99_ms for x in profiles], n)
    long["slo_attainment"] = np.concatenate([a for a, _, _ in per_profile])
    long["slo_attainment_source"] = np.concatenate([s for _, _, s in per_profile])
    long["goodput_rps"] = np.concatenate([g for _, g, _ in per_profile])
    long["meets_slo"] = np.concatenate([meets_slo(configs, x) for x in profiles]) & np.tile(rankable, p)
    long["topsis_score"] = _scores(long, np.tile(rankable, p), profiles)
    _rank(long, np.tile(rankable, p), np.tile(not_ranked, p), profiles)
    long.attrs["profiles"] = [x.to_dict() for x in profiles]
    long.attrs["hardware"] = [h.to_dict() for h in hardware]
    return long


def _scores(long: pd.DataFrame, rankable: np.ndarray, profiles: Sequence[Profile]) -> np.ndarray:
    """TOPSIS per (model, profile) over the rankable rows; NaN elsewhere."""
    scores = np.full(len(long), np.nan)
    criteria = list(CRITERIA)
    maximize = [CRITERIA[c] == "max" for c in criteria]
    matrix = long[criteria].to_numpy(float)
    # goodput may be NaN (no duration) or 0: a missing goodput counts as none.
    matrix[:, criteria.index("goodput_rps")] = np.nan_to_num(matrix[:, criteria.index("goodput_rps")])
    weights = [[x.weights.get(c, 0.0) for c in criteria] for x in profiles]
    group, profile = _group_codes(long, profiles)
    rows = np.flatnonzero(rankable)
    order = rows[np.argsort(group[rows], kind="stable")]
    for part in np.split(order, np.flatnonzero(np.diff(group[order])) + 1):
        if len(part):  # one iteration per (model, profile), not per config
            scores[part] = topsis(matrix[part], maximize, weights[profile[part[0]]])
    return scores


def _group_codes(long: pd.DataFrame, profiles: Sequence[Profile]) -> tuple[np.ndarray, np.ndarray]:
    """(model × profile group code, profile index) per long row, from integer codes, not strings."""
    model, _ = pd.factorize(long["model"].astype(str))
    profile = pd.Index([x.name for x in profiles]).get_indexer(long["profile"])
    return model * len(profiles) + profile, profile


def _rank(long: pd.DataFrame, rankable: np.ndarray, not_ranked: np.ndarray,
          profiles: Sequence[Profile]) -> None:
    """rank 1..n per (model, profile): meets_slo first, then TOPSIS score, then config_id."""
    meets = long["meets_slo"].to_numpy()
    group, _ = _group_codes(long, profiles)
    config_order = np.argsort(np.argsort(long["config_id"].astype(str).to_numpy(), kind="stable"))
    score = np.nan_to_num(long["topsis_score"].to_numpy(float), nan=-1.0)
    order = np.lexsort((config_order, -score, ~meets, ~rankable, group))
    g = group[order]
    starts = np.r_[True, g[1:] != g[:-1]]
    position = np.arange(len(order)) - np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    rank = np.empty(len(order), float)
    rank[order] = position + 1
    long["rank"] = pd.array(np.where(rankable, rank, np.nan), dtype="Int64")
    ttft, tpot = long["ttft_p99_ms"].to_numpy(float), long["tpot_p99_ms"].to_numpy(float)
    slo_ttft, slo_tpot = long["slo_ttft_p99_ms"].to_numpy(), long["slo_tpot_p99_ms"].to_numpy()
    miss_ttft = _miss("p99 TTFT", ttft, slo_ttft)
    miss_tpot = _miss("p99 TPOT", tpot, slo_tpot)
    both = np.where((miss_ttft != "") & (miss_tpot != ""), "; ", "")
    misses = "misses SLO, ranked after configs that meet it: " + miss_ttft + both + miss_tpot
    long["rank_note"] = np.where(~rankable, not_ranked, np.where(meets, "meets SLO", misses))


def _miss(label: str, value: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """'p99 TTFT 812 ms > 450' where VALUE exceeds LIMIT, '' elsewhere (formats only those rows)."""
    out = np.full(len(value), "", dtype=object)
    bad = np.flatnonzero(value > limit)
    text = np.char.mod("%.4g", value[bad]).astype(object)
    out[bad] = label + " " + text + " ms > " + np.char.mod("%.4g", limit[bad]).astype(object)
    return out
