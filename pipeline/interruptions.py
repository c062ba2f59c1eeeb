"""Say so on a benchmark run that lost its worker too often: Dagster's run retries stop after
max_retries, and the run that used the last one gets `servecat/gave_up`, so a person (and the
UI's run filters) can tell a deployment that keeps dying from one that failed once."""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

import dagster as dg

from pipeline.run_history import WILL_RETRY_TAG, is_benchmark_run, is_interruption

GAVE_UP_TAG = "servecat/gave_up"
INTERRUPTIONS_TAG = "servecat/interruptions"


def gave_up_tags(run: dg.DagsterRun, group: list[dg.DagsterRun],
                 default_max_retries: int) -> dict[str, str]:
    """The tags that mark RUN, the last of its retry GROUP, as given up; none when RUN will be
    retried, or failed for another reason than a lost worker."""
    if run.tags.get(WILL_RETRY_TAG) == "true" or not is_interruption(run):
        return {}
    lost = sum(is_interruption(r) for r in group)
    max_retries = run.tags.get("dagster/max_retries", str(default_max_retries))
    return {INTERRUPTIONS_TAG: str(lost),
            GAVE_UP_TAG: f"run worker lost {lost} times in this run's retry group; "
                         f"max_retries {max_retries} used up, not retried again (the nightly "
                         f"backfill tries the deployment again with backoff)"}


@dg.run_failure_sensor(name="interrupted_runs_sensor", minimum_interval_seconds=10,
                       default_status=dg.DefaultSensorStatus.RUNNING)
def interrupted_runs_sensor(context: dg.RunFailureSensorContext):
    """Tag a benchmark run that lost its worker and will not be retried again."""
    instance = context.instance
    # Reloaded: the tags Dagster adds when it records the failure (will_retry) are wanted.
    run = instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    if not is_benchmark_run(run):
        return
    _, group = instance.get_run_group(run.run_id) or (run.run_id, [run])
    tags = gave_up_tags(run, list(group), instance.run_retries_max_retries)
    if tags:
        instance.add_run_tags(run.run_id, tags)
        context.log.warning(f"{run.tags['dagster/partition']}: {tags[GAVE_UP_TAG]}")
