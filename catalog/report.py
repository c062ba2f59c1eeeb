"""What a person wants to see about a catalog: top configs as markdown, a Pareto chart spec,
the asset checks' invariants (scores in [0, 1], ranks a permutation, every config kept), the
deployments a catalog lacks, a deployment's current results, and the recommendations as text."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from catalog.recommend_query import DeploymentIndex
from servecat.values import plain

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


# Why a registered deployment is missing from the catalog, by its partition's state.
LACKING_WHY = {None: "never run", "in_progress": "running", "failed": "last run failed",
               "materialized": "no measured workload"}


def lacking_deployments(registered: Sequence[str], measured: Collection[str],
                        states: Mapping[str, str | None]) -> pd.DataFrame:
    """(deployment, why) for each REGISTERED deployment the catalog lacks (none of its workloads
    MEASURED), and each it holds only from an earlier run because its last run failed. STATES:
    the deployment's partition state (None, "in_progress", "failed" or "materialized")."""
    has = set(measured)
    rows = [(k, LACKING_WHY.get(states.get(k), str(states.get(k))) if k not in has
             else "last run failed; its earlier results are used")
            for k in registered if k not in has or states.get(k) == "failed"]
    return (pd.DataFrame(rows, columns=["deployment", "why"])
            .sort_values(["why", "deployment"]).reset_index(drop=True))


def lacking_markdown(lacking: pd.DataFrame, n: int = 50) -> str:
    """LACKING (from lacking_deployments) as a markdown table of its first N rows."""
    if lacking.empty:
        return "every registered deployment has results in this catalog"
    lines = ["| deployment | why |", "| --- | --- |"]
    lines += [f"| {d} | {w} |" for d, w in lacking.head(n).itertuples(index=False)]
    if len(lacking) > n:
        lines.append(f"| ... and {len(lacking) - n} more | |")
    return "\n".join(lines)


def results_markdown(rows: Sequence[Mapping[str, Any]], measured_now: Collection[str] = ()) -> str:
    """A deployment's summary ROWS (its workloads and their capacity-search probes) as a markdown
    table with each one's status and reason; those in MEASURED_NOW (config ids) marked."""
    if not rows:
        return "no results yet"
    df = pd.DataFrame(list(rows))
    order = [c for c in ("workload_index", "measured_at", "workload_id") if c in df]
    df = df.sort_values(order, na_position="last", kind="stable")
    now = set(measured_now)
    lines = ["| workload | status | tok/s | p99 TTFT ms | p99 TPOT ms | errors | this run | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | :---: | --- |"]
    for r in df.to_dict("records"):  # one deployment's workloads: tens of rows
        note = " ".join(str(r.get("status_reason") or "").split()).replace("|", "/")
        lines.append(
            f"| {r.get('workload_id')} | {r.get('status')} | "
            f"{_fmt(r.get('output_tokens_per_s'), '.1f')} | {_fmt(r.get('ttft_p99_ms'), '.0f')} | "
            f"{_fmt(r.get('tpot_p99_ms'), '.1f')} | {_fmt(r.get('error_rate'), '.1%')} | "
            f"{'yes' if r.get('config_id') in now else ''} | "
            f"{note[:160] + ('…' if len(note) > 160 else '')} |")
    return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    value = plain(value)
    return "" if value is None else format(value, spec)


DEMAND_FACTOR = 2.0  # the demo's demand: twice the highest capacity, so replicas differ


def recommendations_text(deployments: pd.DataFrame, profiles: Mapping[str, Mapping[str, Any]],
                         demand_rps: float | None = None, limit: int = 10) -> str:
    """Per model × length profile × profile, the deployments ranked at their operating points:
    capacity (`>=` for a lower bound), replicas serving the demand, $/hour, $/1M tokens and
    P(#1), answered by the same query as GET /v1/recommend. Without DEMAND_RPS each group's
    demand is DEMAND_FACTOR × its highest capacity."""
    if deployments.empty:
        return "no deployment in this catalog"
    index = DeploymentIndex(deployments, None, dict(profiles) or None)
    parts = []
    for model, lengths, profile in index.groups:  # model × length profile × profile: a few
        top = index.recommend(model=model, profile=profile, lengths=lengths, limit=limit)
        demand, why = demand_rps, f"{demand_rps:g} req/s" if demand_rps else ""
        if demand is None:
            best = max((i["capacity"]["rps"] or 0.0 for i in top["items"]), default=0.0)
            demand = _round_sig(DEMAND_FACTOR * best) if best > 0 else None
            why = (f"{demand:g} req/s ({DEMAND_FACTOR:g} x the highest capacity)" if demand
                   else "none (no capacity)")
        rec = index.recommend(model=model, profile=profile, lengths=lengths,
                              demand_rps=demand, limit=limit) if demand else top
        parts.append(_group_text(rec, why))
    parts.append(">= X: a lower bound (the highest load measured still held the SLOs); replicas "
                 "<= N are then an upper bound. [lo, hi]: the capacity's confidence interval.")
    return "\n\n".join(parts)


def _group_text(rec: dict[str, Any], demand: str) -> str:
    slo = rec["slo"]
    head = (f"{rec['model']} · {rec['traffic']['lengths']} · {rec['profile']} (p99 TTFT <= "
            f"{slo['ttft_p99_ms']:g} ms, p99 TPOT <= {slo['tpot_p99_ms']:g} ms, errors <= "
            f"{(slo.get('max_error_rate') or 0):.0%}); demand {demand}")
    rows = [("rank", "deployment", "capacity req/s", "replicas", "$/hour", "$/1M tok", "P(#1)")]
    for item in rec["items"]:  # a handful of deployments
        cap, point, serving = item["capacity"], item["operating_point"], item.get("serving", {})
        replicas = serving.get("replicas")
        rows.append((
            str(item["rank"]), str(item["deployment"]), _capacity(cap),
            "" if replicas is None else ("<= " if serving.get("upper_bound") else "") + str(replicas),
            _fmt(serving.get("usd_per_hour_on_demand", point.get("usd_per_hour_on_demand")), ".3g"),
            _fmt(point.get("cost_per_mtok_on_demand"), ".3g"), _fmt(item.get("p_first"), ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  " + "  ".join(c.ljust(w) if i == 1 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                      for r in rows]
    if not rec["items"]:
        lines = [head, f"  {rec['reason']}"]
    lines += [f"  unranked {u['deployment']}: {u['reason']}" for u in rec["unranked"]]
    return "\n".join(lines)


def _capacity(cap: Mapping[str, Any]) -> str:
    """A capacity as a person reads it: `>= 16` for a lower bound, else the value with its
    interval when there is one."""
    rps = cap.get("rps")
    if rps is None:
        return ""
    if cap.get("lower_bound"):
        return f">= {rps:.3g}"
    lo, hi = cap.get("rps_lo"), cap.get("rps_hi")
    return f"{rps:.3g} [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else f"{rps:.3g}"


def _round_sig(x: float, digits: int = 2) -> float:
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))
