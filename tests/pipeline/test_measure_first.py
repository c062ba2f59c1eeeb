"""The measure-first sensor (pipeline/measure_first.py) on real measurements (the validation
fixture's tiny deployments) in a real store and Dagster instance: it backfills the unmeasured
deployments likeliest to be in some top 3, a batch at a time within its budget, waits for its
backfill and for the estimates to refit before the next batch, and never requests a measured,
running, failed or already requested deployment."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from assets.matrix import deployments
from catalog import validation
from catalog.estimates import estimates_table, measured_points, workload_rows
from catalog.recommend import build_deployments
from pipeline import measure_first
from pipeline.measure_first import MEASURE_FIRST_TAG, measure_first_backfill
from pipeline.run_history import BENCHMARK_ASSET
from resources.store import ResultStore
from resources.warehouse import Warehouse
from servecat.hardware import load_hardware
from servecat.profiles import load_profiles
from servecat.store import ESTIMATES_PATH, summary_path

HARDWARE = "configs/hardware.yaml"
SUMMARY = validation.load_fixture()
TINY = SUMMARY[SUMMARY["deployment"].astype(str).str.startswith("tiny-")]
NAMES = sorted(TINY["deployment"].astype(str).unique())
FIRST = NAMES[:4]  # measured before the sensor starts


def _measure(store: ResultStore, names: list[str]) -> None:
    """NAMES' summary rows into the store, one file per workload, as their runs wrote them."""
    for (dep, wid), rows in TINY[TINY["deployment"].isin(names)].groupby(
            ["deployment", "workload_id"]):
        store.write_parquet(summary_path(dep, wid), rows.reset_index(drop=True))


def _estimates_on(names: list[str]) -> pd.DataFrame:
    """deployment_estimates' table calibrated on NAMES' measurements."""
    profiles = load_profiles()
    done = TINY[TINY["deployment"].isin(names)]
    cat = build_deployments(done, None, HARDWARE, profiles)
    return estimates_table(workload_rows(TINY), measured_points(cat.deployments, cat.levels),
                           load_hardware(), profiles, summary=done).reset_index(drop=True)


def _refit(instance: dg.DagsterInstance, store: ResultStore, names: list[str]) -> None:
    """deployment_estimates as the asset leaves it, calibrated on NAMES' measurements."""
    store.write_parquet(ESTIMATES_PATH, _estimates_on(names))
    instance.report_runless_asset_event(dg.AssetMaterialization("deployment_estimates"))


def _run_going(instance: dg.DagsterInstance, key: str, failed: bool = False) -> None:
    run = instance.add_run(dg.DagsterRun(job_name="benchmark_runs_job", run_id=str(uuid.uuid4()),
                                         status=dg.DagsterRunStatus.STARTED,
                                         tags={"dagster/partition": key}))
    if failed:
        instance.report_dagster_event(dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_FAILURE.value, job_name=run.job_name),
            run.run_id)


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """A store with FIRST measured and estimates refitted on them; every tiny deployment
    registered; one unmeasured deployment running, another failed."""
    monkeypatch.setenv("SERVECAT_FLEET", "configs/fleet.yaml")
    monkeypatch.setenv(measure_first.BUDGET_ENV, "6")
    monkeypatch.setenv(measure_first.BATCH_ENV, "4")
    store = ResultStore(root=str(tmp_path / "store"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(deployments.name, NAMES)
        _measure(store, FIRST)
        _refit(instance, store, FIRST)
        busy, failed = NAMES[-1], NAMES[-2]
        _run_going(instance, busy)
        _run_going(instance, failed, failed=True)
        yield instance, store, {"store": store, "warehouse": Warehouse(
            database=str(tmp_path / "results.duckdb"))}, {busy, failed}


def _catalog(names: list[str]) -> pd.DataFrame:
    done = TINY[TINY["deployment"].isin(names)]
    return build_deployments(done, None, HARDWARE, load_profiles()).deployments


def _tick(instance, resources, cursor=None):
    from pipeline.definitions import defs

    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                      repository_def=defs.get_repository_def())
    tick = measure_first_backfill.evaluate_tick(context)
    return tick.run_requests or tick.skip_message, tick.cursor


def _requested(requests) -> list[str]:
    return [k for r in requests
            for k in r.asset_graph_subset.get_partitions_subset(BENCHMARK_ASSET)
            .get_partition_keys()]


def _backfill(instance, requests, status=BulkActionStatus.REQUESTED) -> None:
    """The backfills the daemon makes of REQUESTS, with STATUS."""
    for r in requests:
        b = PartitionBackfill.from_asset_graph_subset(
            backfill_id=str(uuid.uuid4())[:8], backfill_timestamp=time.time(), tags=r.tags,
            dynamic_partitions_store=instance, asset_graph_subset=r.asset_graph_subset,
            title=None, description=None, run_config=None)
        instance.add_backfill(b.with_status(status).with_end_timestamp(time.time())
                              if status != BulkActionStatus.REQUESTED else b)


def test_batches_of_the_likeliest_within_the_budget_each_on_refitted_estimates(fleet):
    instance, store, resources, excluded = fleet
    requests, cursor = _tick(instance, resources)
    first = _requested(requests)
    assert all(r.requires_backfill_daemon() for r in requests)
    assert all(r.tags[MEASURE_FIRST_TAG] == "1" and r.tags["servecat/hardware"] == "cpu"
               for r in requests)
    # The 4 unmeasured, idle deployments with the highest P(in some top 3) (one backfill: one
    # set of run tags; a backfill's partitions have no order).
    order = measure_first.next_batch(store.read_parquet(ESTIMATES_PATH).to_pandas(),
                                     _catalog(FIRST), set(NAMES), excluded, len(NAMES),
                                     load_profiles())
    assert sorted(first) == sorted(order["deployment"][:4])
    assert not set(first) & (set(FIRST) | excluded)
    assert order["p_any_top3"].iat[3] >= order["p_any_top3"].iat[4]

    # While its backfill goes, and until the estimates refit on its results, it waits.
    _backfill(instance, requests)
    again, same = _tick(instance, resources, cursor)
    assert "is still going" in again and same == cursor
    [b] = instance.get_backfills(status=BulkActionStatus.REQUESTED)
    instance.update_backfill(b.with_status(BulkActionStatus.COMPLETED_SUCCESS)
                             .with_end_timestamp(time.time()))
    waiting, _ = _tick(instance, resources, cursor)
    assert "waiting for deployment_estimates to refit" in waiting

    # Measured and refitted: the rest of the budget (6 - 4), none of them requested before.
    _measure(store, first)
    _refit(instance, store, FIRST + first)
    requests, cursor = _tick(instance, resources, cursor)
    second = _requested(requests)
    assert len(second) == 2 and not set(second) & (set(FIRST) | set(first) | excluded)
    assert {r.tags[MEASURE_FIRST_TAG] for r in requests} == {"2"}
    _backfill(instance, requests, BulkActionStatus.COMPLETED_SUCCESS)
    spent, _ = _tick(instance, resources, cursor)
    assert "budget of 6 deployment(s) is spent" in spent


def test_without_a_refit_it_goes_on_after_the_wait(fleet, monkeypatch):
    instance, _, resources, _ = fleet
    first, cursor = _tick(instance, resources)
    _backfill(instance, first, BulkActionStatus.COMPLETED_SUCCESS)  # its runs all failed
    assert "waiting" in _tick(instance, resources, cursor)[0]
    later = datetime.now(UTC) + measure_first.REFIT_WAIT + timedelta(minutes=1)
    monkeypatch.setattr(measure_first, "_now", lambda: later)
    second, _ = _tick(instance, resources, cursor)
    assert len(_requested(second)) == 2
    assert not set(_requested(second)) & set(_requested(first))


def test_no_estimates_and_a_bad_budget_say_what_to_do(tmp_path, monkeypatch):
    store = ResultStore(root=str(tmp_path / "store"))
    resources = {"store": store, "warehouse": Warehouse(database=str(tmp_path / "r.duckdb"))}
    with dg.instance_for_test() as instance:
        skip, _ = _tick(instance, resources)
        assert "no estimates yet: materialize deployment_estimates" in skip
        monkeypatch.setenv(measure_first.BUDGET_ENV, "lots")
        with pytest.raises(Exception, match="SERVECAT_MEASURE_FIRST_BUDGET='lots': must be a "
                                            "whole number >= 0"):
            _tick(instance, resources)
        monkeypatch.setenv(measure_first.BUDGET_ENV, "5")
        monkeypatch.setenv(measure_first.BATCH_ENV, "0")
        with pytest.raises(Exception, match="SERVECAT_MEASURE_FIRST_BATCH='0'"):
            _tick(instance, resources)
        monkeypatch.delenv(measure_first.BATCH_ENV)
        with pytest.raises(Exception, match="cursor '2026' is not one it wrote: clear it"):
            _tick(instance, resources, cursor="2026")


def test_a_budget_of_nothing_requests_nothing(fleet, monkeypatch):
    instance, _, resources, _ = fleet
    monkeypatch.setenv(measure_first.BUDGET_ENV, "0")
    skip, _ = _tick(instance, resources)
    assert "budget of 0 deployment(s) is spent" in skip


def test_a_deployment_not_proposed_still_competes_for_the_top_3():
    est, measured, profiles = _estimates_on(FIRST), _catalog(FIRST), load_profiles()

    def batch(estimates, excluded):
        return measure_first.next_batch(estimates, measured, set(NAMES), excluded, len(NAMES),
                                        profiles)
    best = batch(est, set())["deployment"].iat[0]
    kept = batch(est, {best})
    gone = batch(est[est["deployment"] != best], set())
    assert best not in set(kept["deployment"])
    assert set(kept["deployment"]) == set(gone["deployment"])
    # Running (or failed, or requested), it may still take a top-3 place from the others.
    assert kept["p_any_top3"].sum() < gone["p_any_top3"].sum()
