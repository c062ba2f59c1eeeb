"""The run queue, with every benchmark run tagged by its partition however it was launched.

`benchmark_runs_job` tags its runs from the partition (pipeline/launch_tags.py), and the queue's
limits and the fleet's launchers read those tags. A run launched another way — an asset
backfill from the UI, "Materialize" on a partition — belongs to Dagster's implicit asset job
and would carry none: the queue would not hold it to its hardware's limit and ECS/Kubernetes
would not place it on its GPUs. So the tags are added here, before the run is queued.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

from pipeline.launch_tags import partition_run_tags

RUNS = dg.AssetKey("benchmark_runs")


class PartitionTagsRunCoordinator(QueuedRunCoordinator):
    """Dagster's QueuedRunCoordinator (same config) that first gives a run of one
    `benchmark_runs` partition the tags of its deployment, where it lacks them."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        key = run.tags.get("dagster/partition")
        if key and run.asset_selection and RUNS in run.asset_selection:
            try:
                missing = {k: v for k, v in partition_run_tags(key).items() if k not in run.tags}
            except Exception as exc:  # an unknown hardware: the run still queues, untagged
                self._logger.warning(f"run {run.run_id}: no launch tags for {key}: {exc}")
                missing = {}
            if missing:
                self._instance.add_run_tags(run.run_id, missing)
                run = self._instance.get_run_by_id(run.run_id) or run
                context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
