"""Nightly backfill of the deployments whose results are stale or whose last attempt failed.

A sensor that fires once a day, not a schedule: in Dagster 1.13 only a sensor's
`RunRequest.for_asset_graph_subset` becomes a backfill (the UI's Backfills page, with each
partition's status); a schedule can only launch runs. A failed deployment waits 1, 2, 4, ...
days after its newest failure (counted in the run records, pipeline/run_history.py) before it
is tried again, so one that keeps failing does not take a GPU every night.
"""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

# Dagster keeps these private, yet RunRequest.for_asset_graph_subset takes an AssetGraphSubset
# and only a backfill's status tells whether it is still going.
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import BulkActionStatus

from assets.matrix import deployments
from bench.staleness import stale_deployments
from pipeline.launch_tags import partition_run_tags
from pipeline.run_history import (
    BENCHMARK_ASSET,
    Failures,
    busy_deployments,
    failures_by_deployment,
)
from resources.store import ResultStore
from resources.warehouse import Warehouse, refresh_views
from servecat import __version__
from servecat.run_tags import REMEASURE_TAG

STALE_AFTER_DAYS = float(os.environ.get("SERVECAT_STALE_AFTER_DAYS", "30"))
PASS_HOUR_UTC = 3  # a pass a day, after 03:00 UTC (the former schedule's "0 3 * * *")
# A deployment that keeps failing is still tried once per staleness period.
MAX_BACKOFF_DAYS = STALE_AFTER_DAYS
BACKFILL_TAG = "servecat/backfill"  # the pass (its day) that requested the backfill


def backoff_days(failures: int) -> float:
    """Days to wait after the newest of FAILURES failed attempts in a row: 1, 2, 4, ..."""
    return min(2.0 ** (failures - 1), MAX_BACKOFF_DAYS)


@dataclass(frozen=True, slots=True)
class Pick:
    """A deployment to backfill: re-measured (stale results) or resumed (last attempt failed)."""

    deployment: str
    remeasure: bool
    reason: str


def pick(stale: Mapping[str, str], failures: Mapping[str, Failures], known: Collection[str],
         busy: Collection[str], now: datetime) -> tuple[list[Pick], list[str]]:
    """The deployments to backfill NOW, and why each other failed one waits."""
    picks, waiting = [], []
    for key in sorted((set(stale) | set(failures)) & set(known) - set(busy)):
        why = [stale[key]] if key in stale else []
        failed = failures.get(key)
        if failed:
            due = failed.last_end + timedelta(days=backoff_days(failed.count))
            if now < due:
                waiting.append(f"{key}: failed {failed.count} time(s) in a row, next try after "
                               f"{due:%Y-%m-%d %H:%M} UTC")
                continue
            why.append(f"failed {failed.count} time(s) in a row, last on "
                       f"{failed.last_end:%Y-%m-%d %H:%M} UTC")
        picks.append(Pick(key, key in stale, "; ".join(why)))
    return picks, waiting


def backfill_requests(picks: list[Pick], tags_for: Callable[[str], dict[str, str]],
                      now: datetime) -> list[dg.RunRequest]:
    """One backfill per set of run tags: a backfill gives all its runs the same tags, and a
    run's tags (hardware, GPUs, spot retries, launcher placement) follow from its deployment."""
    remeasure = {p.deployment for p in picks if p.remeasure}

    def tags(key: str) -> dict[str, str]:
        out = dict(tags_for(key), **{BACKFILL_TAG: f"{now:%Y-%m-%d}"})
        if key in remeasure:
            # Not run config (a backfill cannot carry it in Dagster 1.13): the run measures
            # again what was measured before now, and a retry of it resumes.
            out[REMEASURE_TAG] = now.isoformat(timespec="seconds")
        return out
    return grouped_backfills([p.deployment for p in picks], tags)


def grouped_backfills(keys: list[str], tags_for: Callable[[str], dict[str, str]]
                      ) -> list[dg.RunRequest]:
    """One backfill of benchmark_runs per set of run tags (TAGS_FOR of each of KEYS), in the
    order the keys' first of each set comes."""
    groups: dict[tuple, list[str]] = {}
    for key in keys:
        groups.setdefault(tuple(sorted(tags_for(key).items())), []).append(key)
    return [_backfill(group, dict(tags)) for tags, group in groups.items()]


def _backfill(keys: list[str], tags: dict[str, str]) -> dg.RunRequest:
    return dg.RunRequest.for_asset_graph_subset(AssetGraphSubset(
        partitions_subsets_by_asset_key={
            BENCHMARK_ASSET: deployments.empty_subset().with_partition_keys(keys)},
        non_partitioned_asset_keys=set()), tags=tags)


def pass_time(now: datetime) -> datetime:
    """The newest daily pass time at or before NOW."""
    today = now.replace(hour=PASS_HOUR_UTC, minute=0, second=0, microsecond=0)
    return today if now >= today else today - timedelta(days=1)


def _now() -> datetime:
    return datetime.now(UTC)


@dg.sensor(name="stale_results_backfill", asset_selection=[BENCHMARK_ASSET],
           minimum_interval_seconds=600, default_status=dg.DefaultSensorStatus.STOPPED)
def stale_results_backfill(context: dg.SensorEvaluationContext, store: ResultStore,
                           warehouse: Warehouse):
    """Daily: backfill the deployments whose results are stale, and the failed ones whose
    backoff has passed."""
    now = _now()
    due = pass_time(now)
    if context.cursor and datetime.fromisoformat(context.cursor) >= due:
        return dg.SkipReason(f"the pass of {due:%Y-%m-%d} is done; the next one starts after "
                             f"{due + timedelta(days=1):%Y-%m-%d %H:%M} UTC")
    instance = context.instance
    going = [b.backfill_id for b in instance.get_backfills(status=BulkActionStatus.REQUESTED)
             if BACKFILL_TAG in b.tags]
    if going:
        # A deployment would be measured twice; this pass starts when that one is done.
        return dg.SkipReason(f"backfill {going[0]} of an earlier pass is still going")
    picks, waiting = pick(_stale(store, warehouse, now), failures_by_deployment(instance, now),
                          instance.get_dynamic_partitions(deployments.name),
                          busy_deployments(instance, now), now)
    context.update_cursor(due.isoformat())
    for line in waiting:
        context.log.info(line)
    if not picks:
        return dg.SkipReason(f"nothing to backfill: every deployment is fresh ({len(waiting)} "
                             f"failed ones wait for their backoff)")
    for p in picks:
        context.log.info(f"{p.deployment}: {p.reason}")
    return backfill_requests(picks, partition_run_tags, now)


def _stale(store: ResultStore, warehouse: Warehouse, now: datetime) -> dict[str, str]:
    with warehouse.connect(store) as con:
        if not refresh_views(con, store)["summary"]:
            return {}
        summary = con.execute("SELECT * FROM summary").df()
    return stale_deployments(summary, now, STALE_AFTER_DAYS, __version__)

