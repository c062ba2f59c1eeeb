"""What a person wants to see about a catalog: top configs as markdown, a Pareto chart spec,
and the asset checks' invariants (scores in [0, 1], ranks a permutation, every config kept)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_COLUMNS = ("rank", "hardware", "gpu_count", "engine", "quantization", "max_num_seqs",
               "concurrency", "rate", "output_tokens_per_s_per_gpu", "ttft_p99_ms", "tpot_p99_ms",
               "cost_per_mtok_on_demand", "slo_attainment", "topsis_score")


def top_markdown(catalog: pd.DataFrame, n: int = 5) -> str:
    """A markdown table of the top N ranked configs per (model, profile)."""
    ranked = catalog[catalog["rank"].notna() & (catalog["rank"] <= n)]
    ranked = ranked.sort_values(["model", "profile", "rank"])
    cols = ["model", "profile", *TOP_COLUMNS]
    table = ranked[cols].copy()
    for col in table.columns:
        if pd.api.types.is_float_dtype(table[col]):
            table[col] = table[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(map(str, row)) + " |"
              for row in table.astype(str).itertuples(index=False)]
    return "\n".join(lines)


DEPLOYMENT_TOP_COLUMNS = {  # column -> header
    "rank": "rank", "deployment": "deployment", "hardware": "hardware", "gpu_count": "GPUs",
    "engine": "engine", "quantization": "quant", "capacity_rps": "capacity req/s",
    "capacity_rps_lo": "lo", "capacity_rps_hi": "hi", "output_tokens_per_s_per_gpu": "tok/s/GPU",
    "ttft_p99_ms": "p99 TTFT ms", "tpot_p99_ms": "p99 TPOT ms",
    "cost_per_mtok_on_demand": "$/1M tok", "p_first": "P(#1)", "p_top3": "P(top 3)",
}


def deployments_markdown(deployments: pd.DataFrame, n: int = 5, groups: int = 24) -> str:
    """Per model × length profile × profile (the first GROUPS of them), the top N deployments at
    their operating points."""
    ranked = deployments[deployments["rank"].notna() & (deployments["rank"] <= n)]
    if ranked.empty:
        return "no deployment has capacity under any profile"
    ranked = ranked.sort_values(["model", "lengths", "profile", "rank"])
    cols = [c for c in DEPLOYMENT_TOP_COLUMNS if c in ranked]
    parts = []
    grouped = list(ranked.groupby(["model", "lengths", "profile"], sort=False))
    for (model, lengths, profile), g in grouped[:groups]:
        table = g[cols].copy()
        for col in table.columns:  # a few columns per table
            if pd.api.types.is_float_dtype(table[col]):
                table[col] = table[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        lines = [f"**{model} · {lengths} · {profile}**", "",
                 "| " + " | ".join(DEPLOYMENT_TOP_COLUMNS[c] for c in cols) + " |",
                 "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(map(str, row)) + " |"
                  for row in table.astype(str).itertuples(index=False)]
        parts.append("\n".join(lines))
    if len(grouped) > groups:  # UI metadata stays readable; the API has every group
        parts.append(f"... and {len(grouped) - groups} more (GET /v1/recommend)")
    return "\n\n".join(parts)


def pareto_vega_lite(catalog: pd.DataFrame, model: str, profile: str,
                     max_points: int = 2000) -> dict[str, Any]:
    """A Vega-Lite spec (data inline): throughput per GPU vs p99 TTFT, the Pareto front highlighted."""
    g = catalog[(catalog["model"] == model) & (catalog["profile"] == profile) & catalog["rank"].notna()]
    step = max(1, len(g) // max_points)
    g = pd.concat([g[g["pareto"]], g[~g["pareto"]].iloc[::step]])
    cols = ["config_id", "hardware", "gpu_count", "engine", "quantization", "ttft_p99_ms",
            "output_tokens_per_s_per_gpu", "cost_per_mtok_on_demand", "pareto"]
    values = g[cols].replace({np.nan: None}).to_dict(orient="records")
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"{model} · {profile}: throughput per GPU vs p99 TTFT (Pareto front in red)",
        "data": {"values": values},
        "mark": {"type": "point", "filled": True},
        "encoding": {
            "x": {"field": "ttft_p99_ms", "type": "quantitative", "scale": {"type": "log"},
                  "title": "p99 TTFT (ms)"},
            "y": {"field": "output_tokens_per_s_per_gpu", "type": "quantitative",
                  "title": "output tokens/s per GPU"},
            "color": {"field": "pareto", "type": "nominal",
                      "scale": {"domain": [True, False], "range": ["#d33", "#9ab"]}},
            "tooltip": [{"field": c} for c in cols],
        },
    }


def check_scores(catalog: pd.DataFrame) -> list[str]:
    """Problems with topsis_score: ranked rows outside [0, 1] or missing."""
    ranked = catalog[catalog["rank"].notna()]
    bad = ranked[~ranked["topsis_score"].between(0, 1)]
    return [f"{len(bad)} ranked rows have topsis_score outside [0, 1] or missing, e.g. "
            f"{bad['config_id'].iloc[0]} ({bad['profile'].iloc[0]})"] if len(bad) else []


def check_ranks(catalog: pd.DataFrame) -> list[str]:
    """Problems with rank: per (model, profile) the ranked rows must hold exactly 1..n."""
    ranked = catalog[catalog["rank"].notna()]
    stats = ranked.groupby(["model", "profile"])["rank"].agg(["min", "max", "count", "nunique"])
    bad = stats[(stats["min"] != 1) | (stats["max"] != stats["count"])
                | (stats["nunique"] != stats["count"])]
    return [f"ranks of {m} / {p} are not a permutation of 1..{int(row['count'])}"
            for (m, p), row in bad.iterrows()]


def check_complete(catalog: pd.DataFrame, summary: pd.DataFrame, profiles: int) -> list[str]:
    """Problems with coverage: every summary config must appear once per profile."""
    counts = catalog["config_id"].value_counts()
    missing = sorted(set(summary["config_id"]) - set(counts.index))
    wrong = counts[counts != profiles]
    out = []
    if missing:
        out.append(f"{len(missing)} configs missing from the catalog, e.g. {missing[:3]}")
    if len(wrong):
        out.append(f"{len(wrong)} configs do not appear once per profile ({profiles}), "
                   f"e.g. {wrong.index[0]} appears {wrong.iloc[0]} times")
    return out
