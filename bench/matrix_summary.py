"""Human-readable summaries of an expanded matrix (terminal text and markdown for the UI)."""

from __future__ import annotations

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
            "workloads": int(exp.configs["workload_id"].nunique()) if kept else 0}


def as_text(exp: Expansion) -> str:
    """The `servecat matrix expand --summary` report."""
    t = totals(exp)
    lines = [f"matrix {exp.spec.name}: {t['kept']:,} configs kept of {t['candidates']:,} "
             f"({t['pruned']:,} pruned); {t['deployments']:,} deployments x "
             f"{t['workloads']} workloads"]
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
    for dim, values in counts(exp).items():
        out += [f"| {dim} | configs |", "| --- | ---: |"]
        out += [f"| {name} | {n:,} |" for name, n in values.items()] + [""]
    out += ["| pruned because | configs |", "| --- | ---: |"]
    out += [f"| {reason} | {n:,} |" for reason, n in exp.pruned.most_common()] or ["| none | 0 |"]
    return "\n".join(out)
