"""Lost run workers on run records: the run that uses up max_retries is marked given up
(pipeline/interruptions.py), and a failed run whose retry never came is reported failed again
so Dagster's retry daemon sees it (pipeline/missed_retries.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg

from pipeline import missed_retries
from pipeline.interruptions import GAVE_UP_TAG, gave_up_tags
from pipeline.missed_retries import NUDGED_TAG, missed_retries_sensor
from tests.pipeline.fleet_support import L4X1


def _lost(i: int, will_retry: bool, **tags) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="benchmark_runs_job", run_id=f"r{i}",
                         status=dg.DagsterRunStatus.FAILURE,
                         tags={"dagster/partition": L4X1,
                               "dagster/will_retry": str(will_retry).lower(), **tags})


def test_a_run_that_lost_its_worker_max_retries_plus_one_times_is_marked():
    group = [_lost(0, True), _lost(1, True), _lost(2, False)]
    tags = gave_up_tags(group[-1], group, default_max_retries=2)
    assert tags["servecat/interruptions"] == "3"
    assert "max_retries 2 used up" in tags[GAVE_UP_TAG]
    assert gave_up_tags(group[0], group[:1], 2) == {}  # it will be retried
    step = _lost(3, False, **{"dagster/failure_reason": "STEP_FAILURE"})
    assert gave_up_tags(step, [step], 2) == {}  # a workload failed: no worker was lost
    spot = _lost(4, False, **{"dagster/max_retries": "3"})
    assert "max_retries 3 used up" in gave_up_tags(spot, [spot], 2)[GAVE_UP_TAG]


def _failed_run(instance: dg.DagsterInstance, **tags) -> str:
    run = instance.add_run(dg.DagsterRun(
        job_name="benchmark_runs_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": L4X1, **tags}))
    instance.report_run_failed(run)  # Dagster tags it will_retry: true (max_retries 2)
    return run.run_id


def _failures(instance: dg.DagsterInstance, run_id: str) -> int:
    return len(instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE))


def test_a_failed_run_whose_retry_never_came_is_reported_failed_again(monkeypatch):
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) \
            as instance:
        orphan = _failed_run(instance)
        retried = _failed_run(instance, **{"dagster/auto_retry_run_id": "some-retry"})
        assert instance.get_run_by_id(orphan).tags["dagster/will_retry"] == "true"

        def tick(after: timedelta) -> None:
            monkeypatch.setattr(missed_retries, "_now", lambda: datetime.now(UTC) + after)
            missed_retries_sensor(dg.build_sensor_context(instance=instance))

        tick(timedelta(seconds=10))  # within the grace period: the daemon may be on its way
        assert _failures(instance, orphan) == 1
        tick(timedelta(minutes=2))
        assert _failures(instance, orphan) == 2 and NUDGED_TAG in instance.get_run_by_id(
            orphan).tags
        assert _failures(instance, retried) == 1
        tick(timedelta(minutes=4))  # once only
        assert _failures(instance, orphan) == 2
