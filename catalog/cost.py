"""Cost per 1M output tokens (DESIGN.md): $/h × GPUs ÷ (output tokens/s × 3600) × 10⁶."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from catalog.config import Hardware


def hardware_type(hardware: pd.Series, known: Sequence[str]) -> pd.Series:
    """The hardware.yaml name of each row: `h100` stays, `h100x2` becomes `h100`; unknown -> NaN."""
    names = set(known)
    uniq = pd.Series(hardware.astype(str).unique())
    base = uniq.where(uniq.isin(names), uniq.str.replace(r"x\d+$", "", regex=True))
    mapping = dict(zip(uniq, base.where(base.isin(names)), strict=True))
    return hardware.astype(str).map(mapping)


def add_cost(configs: pd.DataFrame, hardware: Sequence[Hardware]) -> pd.DataFrame:
    """Add per-GPU throughput, on-demand and spot cost per 1M output tokens, and tokens per USD.

    Prices in hardware.yaml are per GPU-hour (per machine for `cpu`), so a deployment's price is
    price × max(gpu_count, 1). A price the provider reported for the deployment itself
    (`target_cost_usd_per_hour`, e.g. a RunPod pod's costPerHr) replaces the on-demand one.
    Rows whose hardware has no price, or that produced no tokens, get NaN.
    """
    prices = pd.DataFrame([h.to_dict() for h in hardware]).set_index("name")
    kind = hardware_type(configs["hardware"], list(prices.index))
    gpus = np.maximum(pd.to_numeric(configs["gpu_count"], errors="coerce").fillna(1).to_numpy(), 1)
    on_demand = kind.map(prices["on_demand_usd_per_hour"]).to_numpy(float) * gpus
    spot = kind.map(prices["spot_usd_per_hour"]).to_numpy(float) * gpus
    if "target_cost_usd_per_hour" in configs:
        reported = pd.to_numeric(configs["target_cost_usd_per_hour"], errors="coerce").to_numpy(float)
        on_demand = np.where(np.isfinite(reported) & (reported > 0), reported, on_demand)
    tps = configs["output_tokens_per_s"].to_numpy(float)
    tokens_per_hour = np.where(tps > 0, tps * 3600.0, np.nan)
    out = configs.copy()
    out["hardware_type"] = kind.to_numpy(object)
    out["output_tokens_per_s_per_gpu"] = tps / gpus
    out["usd_per_hour_on_demand"] = on_demand
    out["usd_per_hour_spot"] = spot
    out["cost_per_mtok_on_demand"] = on_demand / tokens_per_hour * 1e6
    out["cost_per_mtok_spot"] = spot / tokens_per_hour * 1e6
    with np.errstate(divide="ignore", invalid="ignore"):
        out["tokens_per_usd"] = np.where(on_demand > 0, tokens_per_hour / on_demand, np.nan)
    return out
