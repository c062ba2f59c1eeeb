"""What the run records say about each deployment's benchmark runs: which runs are benchmark
runs, how many times in a row a deployment failed, and which deployments have a run going."""
# No `from __future__ import annotations` here: Dagster modules resolve types at runtime.

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

PARTITION_TAG = "dagster/partition"
# Set by Dagster on a failed run when run_retries is enabled: "true" while a retry is coming.
WILL_RETRY_TAG = "dagster/will_retry"
FAILURE_REASON_TAG = "dagster/failure_reason"
AUTO_RETRY_TAG = "dagster/auto_retry_run_id"
BENCHMARK_JOB = "benchmark_runs_job"
BENCHMARK_ASSET = dg.AssetKey("benchmark_runs")
# Older failures no longer count towards a deployment's backoff.
LOOKBACK_DAYS = 180
# A failed run still waiting for its retry after this long will not get one.
WAITING = timedelta(days=1)


def is_benchmark_run(run: dg.DagsterRun) -> bool:
    """A run of one deployment's benchmark: benchmark_runs_job, or an asset run of
    benchmark_runs (a backfill, the UI's materialize button) with its partition."""
    if PARTITION_TAG not in run.tags:
        return False
    return run.job_name == BENCHMARK_JOB or BENCHMARK_ASSET in (run.asset_selection or ())


def is_interruption(run: dg.DagsterRun) -> bool:
    """A failed run whose worker was lost (killed, spot reclaimed), not one whose step failed."""
    return (run.status == dg.DagsterRunStatus.FAILURE
            and run.tags.get(FAILURE_REASON_TAG) != "STEP_FAILURE")


@dataclass(frozen=True, slots=True)
class Failures:
    """A deployment's failed attempts since its last success (a run and its automatic retries
    are one attempt), and when the newest one ended."""

    count: int
    last_end: datetime


def failures_by_deployment(instance: dg.DagsterInstance, now: datetime) -> dict[str, Failures]:
    """Deployments whose newest finished attempt failed -> their failures since the last success."""
    failed = [r for r in instance.get_run_records(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.FAILURE], updated_after=now - timedelta(days=LOOKBACK_DAYS)))
        if is_benchmark_run(r.dagster_run) and r.end_time is not None and _final(r, now)]
    ends: dict[str, list[float]] = {}
    for record in failed:
        ends.setdefault(record.dagster_run.tags[PARTITION_TAG], []).append(record.end_time)
    out = {}
    for key, times in ends.items():
        since = _last_success(instance, key)
        times = [t for t in times if since is None or t > since]
        if times:
            out[key] = Failures(len(times), datetime.fromtimestamp(max(times), UTC))
    return out


def _final(record: dg.RunRecord, now: datetime) -> bool:
    """Whether a failed run ends its attempt: a run that will be retried does not (its last
    retry does), unless its retry has not come in a day (pipeline/missed_retries.py)."""
    tags = record.dagster_run.tags
    return (tags.get(WILL_RETRY_TAG) != "true"
            or (AUTO_RETRY_TAG not in tags and record.end_time < (now - WAITING).timestamp()))


def _last_success(instance: dg.DagsterInstance, key: str) -> float | None:
    """When the deployment's newest successful benchmark run ended, if any."""
    for record in instance.get_run_records(filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS], tags={PARTITION_TAG: key})):
        if is_benchmark_run(record.dagster_run) and record.end_time is not None:
            return record.end_time  # records come newest first
    return None


def busy_deployments(instance: dg.DagsterInstance, now: datetime) -> set[str]:
    """Deployments with a benchmark run queued or going, or failed and about to be retried."""
    going = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING]))
    # Dagster tags a failed run with its retry's id once the retry exists (then the retry is
    # the one going); a run without it is waiting for the daemon to retry it.
    waiting = [r for r in instance.get_runs(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"},
        updated_after=now - WAITING)) if AUTO_RETRY_TAG not in r.tags]
    return {r.tags[PARTITION_TAG] for r in [*going, *waiting] if is_benchmark_run(r)}
