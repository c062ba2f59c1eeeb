"""`benchmark_results`: DuckDB views over every result file, with checks a person trusts."""
# No `from __future__ import annotations` here: Dagster resolves config/resource types at runtime.

import dagster as dg

from assets.matrix import benchmark_matrix
from assets.runs import benchmark_runs
from resources.store import ResultStore
from resources.warehouse import Warehouse, refresh_views
from servecat.results import REQUIRED_COLUMNS as REQUIRED

ERROR_RATE_WARN = 0.05

# Refresh after any deployment's run materializes. Plain `eager()` also waits until no upstream
# partition is missing or in progress: with deployments registered but never run (a spec's
# partitions nobody launched, a failed request) or a fleet always running one, the catalog would
# never refresh. Reading mid-run is safe: every result file is written whole or not at all. One
# measured deployment is still required, so a fresh instance does not build an empty catalog.
SOME_DEPLOYMENT_MEASURED = (
    dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing())
    .allow(dg.AssetSelection.assets("benchmark_runs"))
    .with_label("some deployment has results"))
REFRESH_ON_ANY_DEPLOYMENT = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .without(~dg.AutomationCondition.any_deps_in_progress())
    & SOME_DEPLOYMENT_MEASURED
).with_label("eager, whatever other deployments are missing, failed or running")
# A check runs in the same run as its asset whenever the automation sensor requests that asset,
# so the UI never shows a refreshed asset whose checks say "Not Evaluated". (A run launched by
# hand selects the checks of its assets anyway.)
WITH_ITS_ASSET = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.will_be_requested()).with_label("with its asset")


@dg.asset(deps=[benchmark_matrix, benchmark_runs], group_name="benchmarks", kinds={"duckdb"},
          automation_condition=REFRESH_ON_ANY_DEPLOYMENT)
def benchmark_results(store: ResultStore, warehouse: Warehouse) -> dg.MaterializeResult:
    """Views `matrix`, `summary` and `requests` over all result Parquet in the store."""
    with warehouse.connect(store) as con:
        counts = refresh_views(con, store)
        by_status = con.execute("SELECT status, count(*) FROM summary GROUP BY 1 ORDER BY 1"
                                ).fetchall() if counts["summary"] else []
    return dg.MaterializeResult(metadata={
        "database": dg.MetadataValue.path(warehouse.database),
        **{f"{k}_rows": v for k, v in counts.items()},
        "summary_by_status": dg.MetadataValue.md(
            "| status | configs |\n| --- | ---: |\n"
            + "\n".join(f"| {s} | {n} |" for s, n in by_status)),
    })


def _columns(con, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


@dg.asset_check(asset=benchmark_results, blocking=True, automation_condition=WITH_ITS_ASSET)
def results_schema(store: ResultStore, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every table has the columns the catalog relies on."""
    with warehouse.connect(store, read_only=True) as con:
        missing = {t: sorted(set(cols) - _columns(con, t)) for t, cols in REQUIRED.items()
                   if con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]}
    missing = {t: m for t, m in missing.items() if m}
    return dg.AssetCheckResult(passed=not missing, metadata={"missing": str(missing or "none")})


@dg.asset_check(asset=benchmark_results, automation_condition=WITH_ITS_ASSET)
def results_latencies_valid(store: ResultStore, warehouse: Warehouse) -> dg.AssetCheckResult:
    """No negative or NaN latency in a successful request."""
    with warehouse.connect(store, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM requests").fetchone()[0]:
            return dg.AssetCheckResult(passed=True, metadata={"requests": 0})
        bad = con.execute("""
            SELECT count(*) FROM requests WHERE ok AND (
                ttft_ms IS NULL OR isnan(ttft_ms) OR ttft_ms < 0 OR e2e_ms IS NULL
                OR isnan(e2e_ms) OR e2e_ms < ttft_ms OR tpot_ms < 0 OR isnan(tpot_ms))
        """).fetchone()[0]
    return dg.AssetCheckResult(passed=bad == 0, metadata={"invalid_rows": bad})


@dg.asset_check(asset=benchmark_results, automation_condition=WITH_ITS_ASSET)
def results_error_rate(store: ResultStore, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Per deployment, failed requests stay under 5% (a warning, not a failure)."""
    with warehouse.connect(store, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM requests").fetchone()[0]:
            return dg.AssetCheckResult(passed=True, metadata={"requests": 0})
        rows = con.execute("""SELECT deployment, avg(CASE WHEN ok THEN 0 ELSE 1 END) AS rate
                              FROM requests GROUP BY 1 HAVING rate > ?""",
                           [ERROR_RATE_WARN]).fetchall()
    return dg.AssetCheckResult(passed=not rows, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"over_threshold": str(dict(rows) or "none")})


@dg.asset_check(asset=benchmark_results, automation_condition=WITH_ITS_ASSET)
def results_complete(store: ResultStore, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every kept config of the matrix has a summary (measured, or skipped with a reason)."""
    with warehouse.connect(store, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM summary").fetchone()[0]:
            missing = con.execute("SELECT count(*) FROM matrix").fetchone()[0]
        else:
            missing = con.execute("""
                SELECT count(*) FROM matrix m WHERE NOT EXISTS (
                    SELECT 1 FROM summary s WHERE s.config_id = m.config_id
                    AND (s.status = 'ok' OR (s.status = 'skipped' AND s.status_reason IS NOT NULL)))
            """).fetchone()[0]
    return dg.AssetCheckResult(passed=missing == 0, metadata={"configs_without_result": missing})
