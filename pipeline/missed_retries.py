"""Nudge Dagster's run retries when they miss a failed benchmark run.

Dagster 1.13's retry daemon reads each new run-failure event once, and asks the run's status
then; the failure event is written a moment before the status (two writes), so a daemon tick
that falls between them finds the run still STARTED, skips it, and never looks again: the run
stays tagged `dagster/will_retry: true` with no retry (seen here with a killed worker on a
loaded 2-core machine; an asset backfill then waits for that retry forever). This sensor
reports such a run failed once more, after a grace period: a new failure event, read while
the status already says FAILURE, so the daemon retries it the usual way (same retry group,
same max_retries) - and if it had only been slow, it finds its retry and makes no other.
"""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

from datetime import UTC, datetime, timedelta

import dagster as dg

from pipeline.run_history import AUTO_RETRY_TAG, WILL_RETRY_TAG, is_benchmark_run

NUDGED_TAG = "servecat/retry_nudged"
GRACE = timedelta(seconds=60)  # the retry daemon ticks every 5 s


def _now() -> datetime:
    return datetime.now(UTC)


def missed(instance: dg.DagsterInstance, now: datetime) -> list[dg.DagsterRun]:
    """Benchmark runs marked for a retry that has not come GRACE after they failed."""
    records = instance.get_run_records(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"},
        updated_after=now - timedelta(days=1)))
    return [r.dagster_run for r in records
            if is_benchmark_run(r.dagster_run) and AUTO_RETRY_TAG not in r.dagster_run.tags
            and NUDGED_TAG not in r.dagster_run.tags
            and r.end_time is not None and now.timestamp() - r.end_time > GRACE.total_seconds()]


@dg.sensor(name="missed_retries_sensor", minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def missed_retries_sensor(context: dg.SensorEvaluationContext):
    """Report again, once, the failure of a benchmark run whose retry never came."""
    instance, now = context.instance, _now()
    runs = missed(instance, now)
    for run in runs:
        instance.add_run_tags(run.run_id, {NUDGED_TAG: now.isoformat(timespec="seconds")})
        instance.report_run_failed(run, f"no retry {GRACE.total_seconds():.0f} s after this "
                                        f"run failed: reported again for the retry daemon")
        context.log.warning(f"{run.tags['dagster/partition']}: run {run.run_id} had no retry; "
                            f"failure reported again")
    return dg.SkipReason(f"{len(runs)} missed retries nudged")
