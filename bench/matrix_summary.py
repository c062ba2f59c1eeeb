"""Human-readable summaries of an expanded matrix (terminal text and markdown for the UI)."""

from __future__ import annotations

import numpy as np

from bench.capacity_search import search_probes
from bench.matrix import Expansion

DIMENSIONS = ("model", "hardware_key", "engine", "quantization", "lengths", "load")


def counts(exp: Expansion) -> dict[str, dict[str, int]]:
    """Kept configs per value of each dimension, plus kept configs per model."""
    df = exp.configs
    if df.empty:
        return {}
    return {dim: {str(k): int(v) for k, v in df[dim].value_counts(sort=False).items()}
            for dim in DIMENSIONS}


def totals(exp: Expansion) -> dict[str, int]:
    kept = len(exp.configs)
    return {"candidates": exp.candidates, "kept": kept, "pruned": exp.candidates - kept,
            "deployments": len(exp.deployments),
            "workloads": int(exp.configs["workload_id"].nunique()) if kept else 0,
            **searches(exp)}


def searches(exp: Expansion) -> dict[str, int]:
    """Kept configs that are capacity searches, the most probes they measure in all, and the
    levels fixed geometric grids at the same precisions would measure instead."""
    df = exp.configs
    rows = df[df["search"].astype(bool)] if "search" in df else df.iloc[:0]
    if rows.empty:
        return {"searches": 0, "max_probes": 0, "grid_levels": 0}
    lo, hi, p = (rows[c].to_numpy(float) for c in ("search_min", "search_max", "search_precision"))
    grid = np.ceil(np.log(hi / lo) / np.log1p(p)) + 1  # grid_levels(), over the rows
    return {"searches": len(rows), "max_probes": int(search_probes(rows).sum()),
            "grid_levels": int(grid.sum())}


def _search_line(t: dict[str, int]) -> str:
    return (f"{t['searches']:,} of them capacity searches: probes chosen at run time, at most "
            f"{t['max_probes']:,} in all (fixed grids at the same precision: "
            f"{t['grid_levels']:,} levels)")


def as_text(exp: Expansion) -> str:
    """The `servecat matrix expand --summary` report."""
    t = totals(exp)
    lines = [f"matrix {exp.spec.name}: {t['kept']:,} configs kept of {t['candidates']:,} "
             f"({t['pruned']:,} pruned); {t['deployments']:,} deployments x "
             f"{t['workloads']} workloads"]
    if t["searches"]:
        lines.append(_search_line(t))
    for dim, values in counts(exp).items():
        lines.append(f"\n{dim}:")
        lines += [f"  {name:<40} {n:>9,}" for name, n in values.items()]
    lines.append("\npruned by reason (configs):")
    lines += [f"  {reason:<72} {n:>9,}" for reason, n in exp.pruned.most_common()] or ["  none"]
    return "\n".join(lines)


def as_markdown(exp: Expansion) -> str:
    """The same report as markdown tables, for Dagster UI metadata."""
    t = totals(exp)
    out = [f"**{t['kept']:,}** configs kept of {t['candidates']:,} "
           f"({t['pruned']:,} pruned), **{t['deployments']:,}** deployments", ""]
    if t["searches"]:
        out[-1:] = [_search_line(t), ""]
    for dim, values in counts(exp).items():
        out += [f"| {dim} | configs |", "| --- | ---: |"]
        out += [f"| {name} | {n:,} |" for name, n in values.items()] + [""]
    out += ["| pruned because | configs |", "| --- | ---: |"]
    out += [f"| {reason} | {n:,} |" for reason, n in exp.pruned.most_common()] or ["| none | 0 |"]
    return "\n".join(out)
