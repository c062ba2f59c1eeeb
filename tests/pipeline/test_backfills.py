"""The nightly backfill (pipeline/backfills.py): stale and failed deployments become backfills
grouped by their runs' tags, a failed deployment waits 1, 2, 4, ... days after its newest
failure (counted in the run records), busy and unknown ones are left alone, and one pass runs
per day."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest

from pipeline import backfills
from pipeline.backfills import (
    BACKFILL_TAG,
    REMEASURE_TAG,
    Pick,
    backoff_days,
    pick,
    stale_results_backfill,
)
from pipeline.run_history import BENCHMARK_ASSET, Failures
from resources.store import ResultStore
from resources.warehouse import Warehouse
from servecat import __version__
from servecat.store import matrix_path, requests_path, summary_path
from tests.pipeline.fleet_support import H100X2, L4X1

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
L4X1_B = L4X1.replace("89abcdef", "0badf00d")  # another l4x1 deployment
L4X1_C = L4X1.replace("89abcdef", "c0ffee00")
FRESH = H100X2.replace("0123abcd", "fee1900d")
BUSY = H100X2.replace("0123abcd", "b0b0b0b0")


def test_a_failed_deployment_waits_1_2_4_days_after_its_newest_failure():
    assert [backoff_days(n) for n in (1, 2, 3, 4, 9)] == [1, 2, 4, 8, backfills.MAX_BACKOFF_DAYS]
    failures = {"once": Failures(1, NOW - timedelta(hours=25)),
                "twice": Failures(2, NOW - timedelta(hours=25)),
                "thrice": Failures(3, NOW - timedelta(days=4, hours=1))}
    picks, waiting = pick({}, failures, known=failures, busy=(), now=NOW)
    assert [p.deployment for p in picks] == ["once", "thrice"]
    assert not any(p.remeasure for p in picks)
    assert waiting == ["twice: failed 2 time(s) in a row, next try after 2026-03-11 03:00 UTC"]


def test_stale_failed_busy_and_unknown_deployments():
    stale = {"stale": "too old", "stale_failing": "too old", "busy": "too old", "gone": "x"}
    failures = {"stale_failing": Failures(1, NOW - timedelta(hours=2))}
    picks, waiting = pick(stale, failures, known={"stale", "stale_failing", "busy"},
                          busy={"busy"}, now=NOW)
    # Backoff wins over staleness: a deployment failing now is not retried every night.
    assert picks == [Pick("stale", True, "too old")]
    assert waiting[0].startswith("stale_failing: failed 1 time(s)")


def _summary(store: ResultStore, key: str, measured_at: datetime) -> None:
    """KEY's rows as a finished run leaves them, as far as staleness reads them."""
    ids = {"config_id": [f"{key}-c1"], "deployment": [key], "workload_id": ["chat-c1"]}
    store.write_parquet(summary_path(key, "chat-c1"), pa.table(ids | {
        "status": ["ok"], "measured_at": [measured_at.isoformat(timespec="seconds")],
        "servecat_version": [__version__]}))
    store.write_parquet(requests_path(key, "chat-c1"), pa.table(ids | {"ok": [True]}))
    store.write_parquet(matrix_path(key), pa.table(ids))


def _run(instance: dg.DagsterInstance, key: str,
         end: dg.DagsterEventType | None = dg.DagsterEventType.RUN_FAILURE) -> None:
    """A benchmark run of KEY, ended now with END (a failure, a success) or still going."""
    run = instance.add_run(dg.DagsterRun(job_name="benchmark_runs_job", run_id=str(uuid.uuid4()),
                                         status=dg.DagsterRunStatus.STARTED,
                                         tags={"dagster/partition": key}))
    if end is not None:
        instance.report_dagster_event(dg.DagsterEvent(event_type_value=end.value,
                                                      job_name=run.job_name), run.run_id)


@pytest.fixture
def history(tmp_path, monkeypatch):
    """A temp instance and store: H100X2 measured 40 days ago (stale), FRESH yesterday, L4X1
    failed once, L4X1_B three times, L4X1_C once but a success since, BUSY going."""
    monkeypatch.setenv("SERVECAT_FLEET", "configs/fleet.yaml")
    store = ResultStore(root=str(tmp_path / "store"))
    real_now = datetime.now(UTC)
    _summary(store, H100X2, real_now - timedelta(days=40))
    _summary(store, FRESH, real_now - timedelta(days=1))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("deployments", [H100X2, FRESH, L4X1, L4X1_B, L4X1_C, BUSY])
        _run(instance, L4X1)
        for _ in range(3):
            _run(instance, L4X1_B)
        _run(instance, L4X1_C)
        _run(instance, L4X1_C, end=dg.DagsterEventType.RUN_SUCCESS)
        _run(instance, BUSY, end=None)
        _summary(store, BUSY, real_now - timedelta(days=40))
        yield instance, {"store": store,
                         "warehouse": Warehouse(database=str(tmp_path / "results.duckdb"))}


def _evaluate(instance, resources, cursor=None):
    """One tick as the daemon runs it (the backfill requests checked against the sensor's
    asset selection): the run requests, or the skip message, and the new cursor."""
    from pipeline.definitions import defs

    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                      repository_def=defs.get_repository_def())
    tick = stale_results_backfill.evaluate_tick(context)
    return tick.run_requests or tick.skip_message, tick.cursor


def test_one_backfill_per_hardware_with_stale_and_due_failed_deployments(history, monkeypatch):
    instance, resources = history
    # A day and a half on: L4X1's single failure has waited its day, L4X1_B's third not 4.
    later = datetime.now(UTC) + timedelta(days=1.5)
    monkeypatch.setattr(backfills, "_now", lambda: later)
    requests, cursor = _evaluate(instance, resources)
    assert all(r.requires_backfill_daemon() for r in requests)
    by_hardware = {r.tags["servecat/hardware"]: r for r in requests}
    assert set(by_hardware) == {"h100", "l4"}
    partitions = {hw: sorted(r.asset_graph_subset.get_partitions_subset(BENCHMARK_ASSET)
                             .get_partition_keys()) for hw, r in by_hardware.items()}
    assert partitions == {"h100": [H100X2], "l4": [L4X1]}
    h100, l4 = by_hardware["h100"].tags, by_hardware["l4"].tags
    # Each backfill's runs get what benchmark_runs_job's partitioned config would give them.
    assert h100["servecat/hardware_key"] == "h100x2" and h100["dagster/max_retries"] == "3"
    assert "ecs/run_task_kwargs" in h100 and "dagster-k8s/config" in l4
    assert REMEASURE_TAG in h100 and REMEASURE_TAG not in l4  # stale: re-measured
    assert h100[BACKFILL_TAG] == l4[BACKFILL_TAG] == f"{later:%Y-%m-%d}"
    # One pass a day: the same day again skips, the next day's pass runs.
    again, _ = _evaluate(instance, resources, cursor)
    assert "is done" in again
    monkeypatch.setattr(backfills, "_now", lambda: later + timedelta(days=1))
    assert isinstance(_evaluate(instance, resources, cursor)[0], list)


def test_no_pass_while_an_earlier_backfill_is_going(history):
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.execution.backfill import PartitionBackfill

    from assets.matrix import deployments

    instance, resources = history
    subset = AssetGraphSubset({BENCHMARK_ASSET: deployments.empty_subset().with_partition_keys(
        [H100X2])}, set())
    instance.add_backfill(PartitionBackfill.from_asset_graph_subset(
        backfill_id="earlier", backfill_timestamp=NOW.timestamp(), tags={BACKFILL_TAG: "x"},
        dynamic_partitions_store=instance, asset_graph_subset=subset, title=None,
        description=None, run_config=None))
    skip, cursor = _evaluate(instance, resources)
    assert "backfill earlier of an earlier pass is still going" in skip
    assert cursor is None  # tried again at the next tick



def test_a_stale_backfill_run_measures_again_only_what_was_measured_before_it(bench_env):
    from assets.runs import benchmark_runs

    [key] = bench_env.matrix()
    bench_env.run(key)
    time.sleep(1.1)  # summaries keep whole seconds: the pass starts after them
    cutoff = datetime.now(UTC).isoformat(timespec="seconds")

    def backfill_run() -> int:
        result = dg.materialize([benchmark_runs], instance=bench_env.instance, partition_key=key,
                                resources=bench_env.resources(), tags={REMEASURE_TAG: cutoff})
        return result.asset_materializations_for_node("benchmark_runs")[0].metadata[
            "measured_now"].value

    assert backfill_run() == 3  # everything was measured before the pass
    assert backfill_run() == 0  # a retry of it resumes: nothing measured twice
