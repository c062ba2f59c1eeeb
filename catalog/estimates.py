"""The estimates table: for every kept deployment × length profile × profile of a matrix, the
roofline (catalog/roofline.py) calibrated by what was measured (catalog/calibration.py), each
metric with its 95% prediction interval, marked `source: estimate` and never mixed with the
measured rows without that mark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from catalog.calibration import KEY, calibrate
from catalog.physical import level_rows, physical_calibrate
from catalog.roofline import Assumptions, estimate
from servecat.hardware import Hardware
from servecat.profiles import Profile

# What is calibrated and reported. capacity_rps and tpot_p50_ms are what the validation
# scores; the others complete an operating point the catalog can rank.
METRICS = ("capacity_rps", "output_tokens_per_s", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")
ESTIMATE_COLUMNS = (*KEY, "model", "hardware", "gpu_count", "engine", "quantization",
                    "max_num_seqs",
                    "max_num_batched_tokens", "source", "measured", "capacity_limiting",
                    *(f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")),
                    "cost_per_mtok_on_demand", "roofline_capacity_rps", "roofline_tpot_p50_ms",
                    "fit")


def workload_rows(configs: pd.DataFrame) -> pd.DataFrame:
    """One row per deployment × length profile of an expansion's configs: what the roofline
    reads (the length profile's mean tokens; the load levels are the estimate's own)."""
    return (configs.drop_duplicates(["deployment", "lengths"]).reset_index(drop=True))


def measured_points(deployments: pd.DataFrame, levels: pd.DataFrame) -> pd.DataFrame:
    """KEY + METRICS + capacity_status from the catalog's deployment and level tables
    (catalog.recommend.build_deployments): a value only where the capacity is bracketed (a lower
    bound or none says too little to fit or score); p50 TPOT is the level at the operating
    point's load (rate or concurrency)."""
    d = deployments.copy()
    bracketed = d["capacity_status"].astype(str).to_numpy() == "bracketed"
    out = d[[*KEY, "capacity_status"]].copy()
    for m in ("capacity_rps", "output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms"):
        out[m] = np.where(bracketed, pd.to_numeric(d[m], errors="coerce"), np.nan)
    kind = levels["load"].astype(str)
    lv = levels[["deployment", "lengths", "load", "tpot_p50_ms"]].assign(x=np.where(
        kind == "rate", pd.to_numeric(levels["rate"], errors="coerce"),
        pd.to_numeric(levels["concurrency"], errors="coerce")))
    lv = lv.drop_duplicates(["deployment", "lengths", "load", "x"])
    at = d[["deployment", "lengths", "load"]].assign(
        x=pd.to_numeric(d["pass_level"], errors="coerce"))
    at = at.merge(lv, on=["deployment", "lengths", "load", "x"], how="left")
    out["tpot_p50_ms"] = np.where(bracketed, at["tpot_p50_ms"].to_numpy(float), np.nan)
    return out


def estimates_table(configs: pd.DataFrame, measured: pd.DataFrame | None,
                    hardware: Mapping[str, Hardware], profiles: Sequence[Profile],
                    assumptions: Assumptions | None = None,
                    summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every deployment × length profile × profile of CONFIGS with its calibrated estimate and
    interval; `measured` says whether MEASURED (measured_points) has a value for its capacity,
    and `source` is `estimate` throughout: a measured row's own figures live in the catalog.
    With the measured SUMMARY rows, the roofline's physics is fitted on their load levels
    (catalog/physical.py); without, its answers are regressed on the operating points
    (catalog/calibration.py's ridge)."""
    if measured is None or measured.empty:
        measured = pd.DataFrame(columns=[*KEY, "capacity_status", *METRICS])
    levels = level_rows(summary)
    if len(levels):
        est = cal = physical_calibrate(workload_rows(configs), levels, measured, hardware,
                                       profiles, METRICS, assumptions)
    else:
        est = estimate(workload_rows(configs), hardware, profiles, assumptions)
        cal = calibrate(est, measured, METRICS)
    out = cal.rename(columns={m: f"roofline_{m}" for m in METRICS})
    for m in METRICS:
        out = out.rename(columns={f"{m}_est": m})
    have = measured.dropna(subset=["capacity_rps"])[list(KEY)].assign(_m=True)
    out = out.merge(have, on=list(KEY), how="left")
    out["measured"] = out.pop("_m").fillna(False).astype(bool)
    out["source"] = "estimate"
    out["fit"] = out["capacity_rps_fit"]
    price = out["hardware"].astype(str).map(
        {n: h.on_demand_usd_per_hour for n, h in hardware.items()}).to_numpy(float)
    tps = out["output_tokens_per_s"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["cost_per_mtok_on_demand"] = np.where(
            tps > 0, price * pd.to_numeric(out["gpu_count"], errors="coerce").fillna(1)
            / (tps * 3600.0) * 1e6, np.nan)
    out = out[[c for c in ESTIMATE_COLUMNS if c in out]]
    out.attrs["assumptions"] = est.attrs.get("assumptions", {})
    return out
