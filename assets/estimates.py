"""`deployment_estimates`: the roofline of every kept deployment of every matrix in the store,
calibrated by the measured results and refitted whenever they change (downstream of
`benchmark_results`), with its leave-one-deployment-out error in the metadata."""
# No `from __future__ import annotations` here: Dagster resolves config/resource types at runtime.

import dagster as dg
import pandas as pd

from assets.catalog import HARDWARE, PROFILES, read_results
from assets.results import benchmark_results
from catalog.calibration import error_table
from catalog.estimates import METRICS, estimates_table, measured_points, workload_rows
from catalog.physical import level_rows, physical_leave_one_out
from catalog.recommend import build_deployments
from resources.store import ResultStore
from resources.warehouse import Warehouse
from servecat.hardware import load_hardware
from servecat.profiles import load_profiles
from servecat.store import ESTIMATE_ERRORS_PATH as ERRORS_PATH
from servecat.store import ESTIMATES_PATH

# Leave-one-deployment-out refits once per measured deployment: beyond this many it would
# dominate the refresh, and the error is reported on a sample of this size instead.
LODO_MAX_DEPLOYMENTS = 200


def refit(matrix: pd.DataFrame, summary: pd.DataFrame,
          hardware_path: str = HARDWARE, profiles_path: str = PROFILES
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(estimates of every MATRIX deployment × length profile × profile, LODO error table)."""
    hardware, profiles = load_hardware(hardware_path), load_profiles(profiles_path)
    measured = (summary[summary["status"] == "ok"] if "status" in summary else summary.iloc[0:0])
    points = None
    if len(measured):
        cat = build_deployments(summary, None, hardware_path, profiles)
        points = measured_points(cat.deployments, cat.levels)
    table = estimates_table(matrix, points, hardware, profiles, summary=measured)
    errors = pd.DataFrame()
    if points is not None and points["capacity_rps"].notna().any():
        # Only deployments measured and in a matrix can be held out and predicted.
        keep = sorted(set(points["deployment"].astype(str))
                      & set(matrix["deployment"].astype(str)))[:LODO_MAX_DEPLOYMENTS]
        rows = workload_rows(matrix[matrix["deployment"].astype(str).isin(keep)])
        if len(rows):
            held = physical_leave_one_out(rows, level_rows(measured), points, hardware,
                                          profiles, METRICS)
            errors = error_table(held) if len(held) else errors
    return table, errors


@dg.asset(deps=[benchmark_results], group_name="catalog", kinds={"parquet"},
          automation_condition=dg.AutomationCondition.eager())
def deployment_estimates(store: ResultStore, warehouse: Warehouse) -> dg.MaterializeResult:
    """Per deployment × length profile × profile of every matrix: TTFT, TPOT, throughput and
    capacity estimated by the roofline and calibrated on the measurements (source: estimate,
    95% intervals); metadata: leave-one-deployment-out MAPE and coverage per metric."""
    with warehouse.connect(store, read_only=True) as con:
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        if "matrix" not in tables:
            raise dg.Failure(description="benchmark_results has no matrix yet: materialize "
                                         "benchmark_matrix and benchmark_results first")
        matrix = con.execute("SELECT * FROM matrix").df()
    summary, _ = read_results(store, warehouse)
    table, errors = refit(matrix, summary)
    uri = store.write_parquet(ESTIMATES_PATH, table.reset_index(drop=True))
    if len(errors):
        store.write_parquet(ERRORS_PATH, errors)
    measured = int(table["measured"].sum())
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(uri), "rows": len(table),
        "deployments": int(table["deployment"].nunique()),
        "rows_measured": measured, "rows_estimated_only": len(table) - measured,
        "fit": str(table["fit"].iloc[0]) if len(table) else "none",
        "assumptions": table.attrs.get("assumptions", {}).get("text", ""),
        "lodo_errors": dg.MetadataValue.md(_markdown(errors)),
    })


def _markdown(errors: pd.DataFrame) -> str:
    if errors.empty:
        return "no bracketed measurement yet: nothing to hold out"
    rows = errors[errors["profile"] == "all"]
    lines = ["| metric | rows | MAPE roofline | MAPE calibrated | 95% interval coverage |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.metric} | {r.rows} | {r.mape_roofline:.1%} | {r.mape_calibrated:.1%} | "
              f"{r.coverage_rows:.0%} |" for r in rows.itertuples()]
    return "\n".join(lines)
