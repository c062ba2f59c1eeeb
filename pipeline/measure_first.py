"""Measure what matters first: within a budget of N deployments, backfill the unmeasured
deployments most likely to be in some profile's top 3, a batch at a time, each batch chosen on
the estimates refitted after the one before.

The order is catalog/measure_order.py's over `deployment_estimates`' intervals: the one
`servecat matrix plan --budget N` prints and `servecat estimate validate` scores. A batch of
more than one trades some of that order's sharpness for the fleet's parallelism: the sensor
waits for its backfill to end and for the estimates to refit on its results (automation does
that within a minute of the results) before it chooses the next; after REFIT_WAIT without a
refit (the batch's runs all failed, so nothing changed) it goes on with the estimates it has.
Failed deployments are the nightly backfill's (pipeline/backfills.py: retried with a backoff),
never re-requested here.
"""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
from dagster._core.execution.backfill import BulkActionStatus

from assets.catalog import HARDWARE, PROFILES, read_results
from assets.matrix import deployments
from catalog.measure_order import candidates, priorities
from catalog.recommend import build_deployments
from pipeline.backfills import grouped_backfills
from pipeline.launch_tags import partition_run_tags
from pipeline.run_history import busy_deployments, failures_by_deployment
from resources.store import ResultStore
from resources.warehouse import Warehouse, refresh_views
from servecat.profiles import Profile, load_profiles
from servecat.store import ESTIMATES_PATH

BUDGET_ENV, BATCH_ENV = "SERVECAT_MEASURE_FIRST_BUDGET", "SERVECAT_MEASURE_FIRST_BATCH"
DEFAULT_BUDGET, DEFAULT_BATCH = 10, 4
MEASURE_FIRST_TAG = "servecat/measure_first"  # the pass (1, 2, ...) that requested a backfill
ESTIMATES_ASSET = dg.AssetKey("deployment_estimates")
REFIT_WAIT = timedelta(hours=1)


def _whole(name: str, default: int, least: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        raise ValueError(f"{name}={raw!r}: must be a whole number >= {least}")
    return value


def budget_and_batch() -> tuple[int, int]:
    """(deployments the sensor may request in all, per pass), from the environment."""
    return _whole(BUDGET_ENV, DEFAULT_BUDGET, 0), _whole(BATCH_ENV, DEFAULT_BATCH, 1)


def next_batch(estimates: pd.DataFrame, measured: pd.DataFrame | None, registered: set[str],
               excluded: set[str], size: int, profiles: Sequence[Profile]) -> pd.DataFrame:
    """The SIZE registered deployments, neither measured nor EXCLUDED, likeliest to be in some
    PROFILES' top 3 (catalog.measure_order.priorities' columns), from ESTIMATES
    (deployment_estimates' table) beside MEASURED (the catalog's deployment rows, or None)."""
    # Excluded ones still compete for the top 3 (one running may well win): only not proposed.
    est = estimates[estimates["deployment"].astype(str).isin(registered)]
    order = priorities(candidates(est, measured), profiles)
    order = order[~order["deployment"].isin(excluded)]
    return order.head(max(size, 0)).reset_index(drop=True)


def _now() -> datetime:
    return datetime.now(UTC)


@dg.sensor(name="measure_first_backfill", asset_selection=["benchmark_runs"],
           minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def measure_first_backfill(context: dg.SensorEvaluationContext, store: ResultStore,
                           warehouse: Warehouse):
    """Backfill, a batch at a time (SERVECAT_MEASURE_FIRST_BATCH, default 4) up to a budget
    (SERVECAT_MEASURE_FIRST_BUDGET, default 10), the unmeasured deployments likeliest to be in
    some profile's top 3 on the latest estimates."""
    budget, batch = budget_and_batch()
    state = _state(context.cursor)
    requested = state["requested"]
    if len(requested) >= budget:
        return dg.SkipReason(f"its budget of {budget} deployment(s) is spent ({len(requested)} "
                             f"requested); raise {BUDGET_ENV} to measure more")
    instance, now = context.instance, _now()
    going = [b for b in instance.get_backfills(status=BulkActionStatus.REQUESTED)
             if MEASURE_FIRST_TAG in b.tags]
    if going:
        return dg.SkipReason(f"backfill {going[0].backfill_id} of pass "
                             f"{going[0].tags[MEASURE_FIRST_TAG]} is still going")
    latest = next(iter(instance.fetch_materializations(ESTIMATES_ASSET, limit=1).records), None)
    if latest is None or not store.exists(ESTIMATES_PATH):
        return dg.SkipReason("no estimates yet: materialize deployment_estimates (it follows "
                             "benchmark_results)")
    if requested and latest.storage_id == state["estimates"]:
        last = [b for b in instance.get_backfills(limit=100)
                if b.tags.get(MEASURE_FIRST_TAG) == str(state["passes"])]
        ended = max((b.backfill_end_timestamp or b.backfill_timestamp for b in last),
                    default=state["requested_at"])
        if now.timestamp() - ended < REFIT_WAIT.total_seconds():
            return dg.SkipReason("waiting for deployment_estimates to refit on the last "
                                 "batch's results")
        context.log.info(f"no refit {REFIT_WAIT} after the last batch ended: going on with "
                         f"the estimates it was chosen on")
    estimates = store.read_parquet(ESTIMATES_PATH).to_pandas()
    summary, profiles = _summary(store, warehouse), load_profiles(PROFILES)
    measured = None
    if len(summary) and (summary["status"] == "ok").any():
        measured = build_deployments(summary, None, HARDWARE, profiles).deployments
    # Run before (measured, or all its configs skipped), requested, going or failing: not ours.
    excluded = (set(requested) | busy_deployments(instance, now)
                | set(failures_by_deployment(instance, now))
                | (set(summary["deployment"].astype(str)) if len(summary) else set()))
    registered = set(instance.get_dynamic_partitions(deployments.name))
    order = next_batch(estimates, measured, registered, excluded,
                       min(batch, budget - len(requested)), profiles)
    if order.empty:
        return dg.SkipReason("every registered deployment is measured, requested, going or "
                             "failed (failed ones are the nightly backfill's)")
    pass_no = state["passes"] + 1
    for r in order.itertuples():
        context.log.info(f"pass {pass_no}: {r.deployment}: P(in some top 3) "
                         f"{r.p_any_top3:.2f}, best for {r.group} ({r.p_top3:.2f})")
    context.update_cursor(json.dumps({
        "requested": [*requested, *order["deployment"]], "estimates": latest.storage_id,
        "passes": pass_no, "requested_at": now.timestamp()}))
    return grouped_backfills(list(order["deployment"]),
                             lambda d: {**partition_run_tags(d), MEASURE_FIRST_TAG: str(pass_no)})


def _state(cursor: str | None) -> dict:
    """The sensor's cursor: what it requested, on which estimates, in how many passes."""
    if not cursor:
        return {"requested": [], "estimates": None, "passes": 0, "requested_at": 0.0}
    try:
        state = json.loads(cursor)
        if not isinstance(state["requested"], list) or not isinstance(state["passes"], int):
            raise TypeError
        return state
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"measure_first_backfill's cursor {cursor[:80]!r} is not one it wrote: "
                         f"clear it in the sensor's page to start over") from None


def _summary(store: ResultStore, warehouse: Warehouse) -> pd.DataFrame:
    with warehouse.connect(store) as con:
        if not refresh_views(con, store)["summary"]:
            return pd.DataFrame()
    return read_results(store, warehouse)[0]
