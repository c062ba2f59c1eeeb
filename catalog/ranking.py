"""Rank deployments at their operating points within each model × length profile × profile:
Pareto flag, TOPSIS score and rank, and P(#1) / P(top 3) from bootstrap draws of the criteria."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from catalog.confidence import probabilities_from_scores, rng_of, share_first_place
from catalog.config import Profile
from catalog.pareto import pareto_mask
from catalog.topsis import topsis_batch
from servecat.profiles import QUALITY_CRITERIA

GROUP = ("model", "lengths", "profile")
# Pareto criteria at the operating point: throughput per GPU ↑, capacity ↑, cost ↓, p99s ↓.
PARETO_CRITERIA = {"output_tokens_per_s_per_gpu": True, "capacity_rps": True,
                   "cost_per_mtok_on_demand": False, "ttft_p99_ms": False, "tpot_p99_ms": False}
TOP = 3
# TOPSIS inverts a minimised criterion (1/x): a KL of 0, the reference deployment itself, would be
# infinitely good and squash every other deployment onto the anti-ideal. exp(-KL) keeps the order,
# is 1 for the reference and falls about linearly over small losses; it is maximised.
RANKED_AS = {"quality_kl": lambda v: np.exp(-v)}


def rank_deployments(table: pd.DataFrame, draws: np.ndarray | None,
                     criteria: Mapping[str, str], profiles: Sequence[Profile],
                     seed: int | np.random.Generator | None = 0,
                     excluded: np.ndarray | None = None) -> None:
    """Add pareto, topsis_score, rank (1..n per model × lengths × profile), rank_note, p_first,
    p_top3 and mean_rank to TABLE in place. DRAWS (rows, B, K) holds each row's CRITERIA per
    bootstrap draw; None gives no probabilities. Rows without capacity are not ranked, nor rows
    whose EXCLUDED entry gives a reason (its profile turns them away, e.g. on quality)."""
    n = len(table)
    rankable, note = rankable_rows(table, criteria, excluded)
    score, rank = np.full(n, np.nan), np.full(n, np.nan)
    p_first, p_top, mean_rank = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    pareto = np.zeros(n, bool)
    maximize = np.array([criteria[c] == "max" or c in RANKED_AS for c in criteria])
    weights = {p.name: np.array([p.weights.get(c, 0.0) for c in criteria]) for p in profiles}
    # A quality criterion counts only where its profile weights it: a deployment may lack it.
    columns = {name: np.array([c not in QUALITY_CRITERIA or w[k] > 0
                               for k, c in enumerate(criteria)]) for name, w in weights.items()}
    matrix = _ranked_as(_matrix(table, list(criteria)), criteria)
    draws = None if draws is None else _ranked_as(draws, criteria)
    front = _matrix(table, list(PARETO_CRITERIA))
    names = table["deployment"].astype(str).to_numpy() if n else np.zeros(0, str)
    rng = rng_of(seed)
    groups = table.groupby(list(GROUP), sort=True, dropna=False).indices if n else {}
    for (_, _, profile), idx in groups.items():  # one per model × length profile × profile
        rows = idx[rankable[idx]]
        if not len(rows):
            continue
        use = columns[profile]
        w, mx = weights[profile][use], maximize[use]
        score[rows] = topsis_batch(matrix[rows][:, use][None], mx, w)[0]
        order = np.lexsort((names[rows], -score[rows]))
        rank[rows[order]] = np.arange(1, len(rows) + 1)
        pareto[rows] = pareto_mask(front[rows], list(PARETO_CRITERIA.values()))
        if draws is not None:
            crit = draws[rows][..., use].transpose(1, 0, 2)  # (B, D, K)
            scores = share_first_place(topsis_batch(crit, mx, w), crit[..., w > 0])
            probs = probabilities_from_scores(scores, top=TOP, seed=rng)
            p_first[rows] = probs["p_first"].to_numpy()
            p_top[rows] = probs[f"p_top{TOP}"].to_numpy()
            mean_rank[rows] = probs["mean_rank"].to_numpy()
    table["pareto"] = pareto
    table["topsis_score"] = score
    table["rank"] = pd.array(np.where(np.isnan(rank), None, rank), dtype="Int64")
    table["rank_note"] = note
    table["p_first"], table[f"p_top{TOP}"], table["mean_rank"] = p_first, p_top, mean_rank


def rankable_rows(table: pd.DataFrame, criteria: Mapping[str, str],
                  excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rankable, note): a capacity, every criterion usable (quality ones are the profile's
    affair: see EXCLUDED) and no EXCLUDED reason; the note says why not, or how it is ranked."""
    n = len(table)
    if not n:
        return np.zeros(0, bool), np.zeros(0, object)
    status = table["capacity_status"].astype(str).to_numpy()
    ok = status != "none"
    for col, sense in criteria.items():
        if col in QUALITY_CRITERIA:
            continue
        v = _matrix(table, [col])[:, 0]
        ok &= np.isfinite(v) & ((v >= 0) if sense == "max" else (v > 0))
    note = np.full(n, "not ranked: a ranking criterion is zero or missing at the operating point",
                   dtype=object)
    checks = [  # later checks override earlier ones: the most basic reason wins
        (~np.isfinite(_matrix(table, ["tpot_p99_ms"])[:, 0]),
         "not ranked: no p99 TPOT at the operating point"),
        (~(_matrix(table, ["output_tokens_per_s"])[:, 0] > 0),
         "not ranked: no output tokens at the operating point"),
        (~np.isfinite(_matrix(table, ["usd_per_hour_on_demand"])[:, 0]),
         "not ranked: hardware has no price in hardware.yaml"),
    ]
    for bad, text in checks:
        note = np.where(bad, text, note)
    reason = table["capacity_reason"].astype(str).to_numpy(object)
    note = np.where(status == "none", "not ranked: " + reason, note)
    if excluded is not None:  # only where nothing more basic already stops the row
        turned = ok & pd.notna(excluded)
        note, ok = np.where(turned, excluded, note), ok & ~turned
    ranked = np.where(table["capacity_lower_bound"].to_numpy(bool),
                      "ranked at a lower bound of its capacity: every measured level held",
                      "ranked at its capacity")
    return ok, np.where(ok, ranked, note)


def _ranked_as(values: np.ndarray, criteria: Mapping[str, str]) -> np.ndarray:
    """VALUES (..., K) with the RANKED_AS criteria transformed (a copy where any is)."""
    at = [k for k, c in enumerate(criteria) if c in RANKED_AS]
    if not at:
        return values
    out = np.array(values, dtype=float, copy=True)
    for k in at:
        out[..., k] = RANKED_AS[list(criteria)[k]](out[..., k])
    return out


def _matrix(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return np.column_stack([
        pd.to_numeric(table[c], errors="coerce").to_numpy(float, na_value=np.nan)
        if c in table else np.full(len(table), np.nan) for c in columns
    ]) if len(table) else np.zeros((0, len(columns)))
