"""`model_catalog`: deployments ranked at their operating points per model × length profile ×
profile, with the per-config rows underneath, written as one immutable snapshot for the API."""
# No `from __future__ import annotations` here: Dagster resolves config/resource types at runtime.

import base64
import io

import dagster as dg
import pandas as pd

from assets.matrix import deployments as deployment_partitions
from assets.results import WITH_ITS_ASSET, benchmark_results
from assets.runs import benchmark_runs
from catalog.build import build_catalog
from catalog.quality import stored_probe_runs
from catalog.recommend import build_deployments
from catalog.report import (
    check_complete,
    check_ranks,
    check_scores,
    deployments_markdown,
    lacking_deployments,
    lacking_markdown,
    top_markdown,
)
from catalog.snapshots import load_latest, write_snapshot
from resources.store import ResultStore, catalog_root
from resources.warehouse import Warehouse

HARDWARE = "configs/hardware.yaml"
PROFILES = "configs/profiles.yaml"


def read_results(store: ResultStore, warehouse: Warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary (one row per config, newest file wins) and the per-request outcomes."""
    with warehouse.connect(store, read_only=True) as con:
        summary = con.execute("SELECT * FROM summary").df()
        requests = (con.execute("SELECT config_id, ttft_ms, tpot_ms, ok FROM requests").df()
                    if "ttft_ms" in {r[0] for r in con.execute("DESCRIBE requests").fetchall()}
                    else None)
    summary = summary.rename(columns={"status_reason": "skip_reason"})
    return summary, requests


def partition_states(instance: dg.DagsterInstance) -> dict[str, str | None]:
    """Each registered deployment's benchmark_runs state: None (never run), "in_progress",
    "failed" (its last run) or "materialized"."""
    keys = instance.get_dynamic_partitions(deployment_partitions.name)
    status = instance.get_status_by_partition(benchmark_runs.key, keys, deployment_partitions) or {}
    return {k: (status[k].value.lower() if status.get(k) else None) for k in keys}


# Its one upstream (benchmark_results) is unpartitioned, so plain eager() does not wait on the
# deployments; waiting while benchmark_results is in progress keeps it off a half-written DuckDB.
@dg.asset(deps=[benchmark_results], group_name="catalog", kinds={"parquet"},
          automation_condition=dg.AutomationCondition.eager())
def model_catalog(context: dg.AssetExecutionContext, store: ResultStore,
                  warehouse: Warehouse) -> dg.MaterializeResult:
    """Per deployment × length profile × profile: capacity, operating point, cost, Pareto flag,
    TOPSIS rank and P(#1); and every config's metrics per profile underneath. Its metadata names
    the registered deployments it lacks (never run, running, failed)."""
    summary, requests = read_results(store, warehouse)
    if summary.empty or "status" not in summary:
        raise dg.Failure(description="benchmark_results has no summaries yet: run "
                                     "benchmark_runs partitions first")
    states = partition_states(context.instance)
    catalog = build_catalog(summary, requests, HARDWARE, PROFILES)
    probes = stored_probe_runs(store)  # runs/quality/deployment=<key>/quality-v1.parquet
    deployments = build_deployments(summary, requests, HARDWARE, PROFILES, probes=probes)
    path = write_snapshot(catalog, catalog_root(store), tables=deployments.tables())
    ranked = deployments.deployments
    measured = set(summary.loc[summary["status"] == "ok", "deployment"].astype(str))
    lacking = lacking_deployments(list(states), measured, states)
    return dg.MaterializeResult(metadata={
        "snapshot": dg.MetadataValue.path(path),
        "deployments": len(measured), "deployments_registered": len(states),
        "deployments_lacking": int((~lacking["deployment"].isin(measured)).sum()),
        "deployments_failed": sum(s == "failed" for s in states.values()),
        "lacking": dg.MetadataValue.md(lacking_markdown(lacking)),
        "rows": len(catalog), "configs": int(summary["config_id"].nunique()),
        "ranked": int(catalog["rank"].notna().sum()),
        "deployment_rows": len(ranked), "ranked_deployment_rows": int(ranked["rank"].notna().sum()),
        "top_deployments": dg.MetadataValue.md(deployments_markdown(ranked, 5)),
        "top_5": dg.MetadataValue.md(top_markdown(catalog, 5)),
        "pareto_chart": dg.MetadataValue.md(_pareto_png_markdown(catalog)),
    })


def _pareto_png_markdown(catalog: pd.DataFrame) -> str:
    """Throughput per GPU vs p99 TTFT for each (model, profile), front in red, as inline PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = []
    ranked = catalog[catalog["rank"].notna()]
    for (model, profile), g in list(ranked.groupby(["model", "profile"]))[:8]:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
        rest, front = g[~g["pareto"]], g[g["pareto"]].sort_values("ttft_p99_ms")
        ax.scatter(rest["ttft_p99_ms"], rest["output_tokens_per_s_per_gpu"], s=12, c="#9ab")
        ax.plot(front["ttft_p99_ms"], front["output_tokens_per_s_per_gpu"], "o-", c="#d33", ms=4)
        ax.set_xscale("log")
        ax.set(xlabel="p99 TTFT (ms)", ylabel="output tok/s per GPU", title=f"{model} / {profile}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        parts.append(f"![{model} {profile}](data:image/png;base64,"
                     f"{base64.b64encode(buf.getvalue()).decode()})")
    return "\n\n".join(parts) or "no ranked configs"


def _latest(store: ResultStore) -> pd.DataFrame:
    return load_latest(catalog_root(store)).frame


def _result(problems: list[str], **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not problems,
                               metadata={"problems": "\n".join(problems) or "none", **metadata})


@dg.asset_check(asset=model_catalog, automation_condition=WITH_ITS_ASSET)
def catalog_scores_in_unit_interval(store: ResultStore) -> dg.AssetCheckResult:
    """Every ranked TOPSIS score lies in [0, 1]."""
    return _result(check_scores(_latest(store)))


@dg.asset_check(asset=model_catalog, automation_condition=WITH_ITS_ASSET)
def catalog_ranks_are_permutations(store: ResultStore) -> dg.AssetCheckResult:
    """Within each (model, profile) the ranks are exactly 1..n."""
    return _result(check_ranks(_latest(store)))


@dg.asset_check(asset=model_catalog, automation_condition=WITH_ITS_ASSET)
def catalog_has_every_config(store: ResultStore, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every measured config appears once per profile."""
    catalog = _latest(store)
    summary, _ = read_results(store, warehouse)
    profiles = catalog["profile"].nunique()
    return _result(check_complete(catalog, summary, profiles), profiles=profiles)
