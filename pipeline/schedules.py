"""Schedules and sensors: keep results fresh, follow the matrix spec."""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from assets.matrix import DEFAULT_SPEC, SPEC_DIGEST, benchmark_matrix, deployments, spec_digest
from pipeline.launch_tags import partition_run_tags
from resources.staleness import stale_deployments
from resources.store import ResultStore
from resources.warehouse import Warehouse, refresh_views
from servecat import __version__

STALE_AFTER_DAYS = float(os.environ.get("SERVECAT_STALE_AFTER_DAYS", "30"))

matrix_job = dg.define_asset_job("benchmark_matrix_job", selection=["benchmark_matrix"])
# Every run of this job (schedule, sensors, backfills, the UI's launchpad) carries the tags of
# its deployment's hardware: the run queue limits runs per GPU type on them, and the ECS /
# Kubernetes launcher places the run on those GPUs.
runs_job = dg.define_asset_job(
    "benchmark_runs_job", selection=["benchmark_runs"], partitions_def=deployments,
    config=dg.PartitionedConfig(partitions_def=deployments,
                                run_config_for_partition_key_fn=lambda _key: {},
                                tags_for_partition_key_fn=partition_run_tags))


@dg.schedule(job=runs_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED)
def stale_results_schedule(context: dg.ScheduleEvaluationContext, store: ResultStore,
                           warehouse: Warehouse):
    """Nightly: re-benchmark just the deployments whose newest results are stale."""
    with warehouse.connect(store) as con:
        refresh_views(con, store)
        summary = con.execute("SELECT * FROM summary").df() if con.execute(
            "SELECT count(*) FROM summary").fetchone()[0] else None
    if summary is None:
        return dg.SkipReason("no results yet")
    now = context.scheduled_execution_time or datetime.now(UTC)
    stale = stale_deployments(summary, now, STALE_AFTER_DAYS, __version__)
    known = set(context.instance.get_dynamic_partitions(deployments.name))
    requests = [dg.RunRequest(partition_key=key, run_key=f"{key}:{now:%Y%m%d}",
                              run_config={"ops": {"benchmark_runs": {"config": {"force": True}}}},
                              tags={"servecat/stale_reason": why[:200]})
                for key, why in sorted(stale.items()) if key in known]
    return requests or dg.SkipReason("every deployment is fresh")


def built_digest(instance: dg.DagsterInstance, spec: str, limit: int = 20) -> str | None:
    """The spec digest of SPEC's newest benchmark_matrix materialization (among the last LIMIT:
    the demo also builds other specs), or None when none recorded one."""
    wanted = Path(spec).resolve()
    records = instance.fetch_materializations(benchmark_matrix.key, limit=limit).records
    for record in records:  # newest first
        meta = record.asset_materialization.metadata if record.asset_materialization else {}
        built, digest = meta.get("spec"), meta.get(SPEC_DIGEST)
        if built is not None and digest is not None and Path(str(built.value)).resolve() == wanted:
            return str(digest.value) or None
    return None


@dg.sensor(job=matrix_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING)
def matrix_spec_sensor(context: dg.SensorEvaluationContext):
    """Re-materialize benchmark_matrix when the spec file's content changes."""
    digest = spec_digest(DEFAULT_SPEC)
    if digest is None:
        return dg.SkipReason(f"{DEFAULT_SPEC} not found")
    # The first tick starts from the matrix already built (by `make demo`, say): no rebuild of
    # an unchanged spec just because this sensor has no cursor yet.
    cursor = context.cursor or built_digest(context.instance, DEFAULT_SPEC)
    if digest == cursor:
        context.update_cursor(digest)
        return dg.SkipReason(f"{DEFAULT_SPEC} unchanged")
    context.update_cursor(digest)
    return dg.RunRequest(run_key=digest, run_config={
        "ops": {"benchmark_matrix": {"config": {"spec_path": DEFAULT_SPEC}}}})
