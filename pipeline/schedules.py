"""The jobs, and the sensor that follows the matrix spec."""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

from pathlib import Path

import dagster as dg

from assets.matrix import DEFAULT_SPEC, SPEC_DIGEST, benchmark_matrix, deployments, spec_digest
from pipeline.launch_tags import partition_run_tags

matrix_job = dg.define_asset_job("benchmark_matrix_job", selection=["benchmark_matrix"])
# Every run of this job (schedule, sensors, backfills, the UI's launchpad) carries the tags of
# its deployment's hardware: the run queue limits runs per GPU type on them, and the ECS /
# Kubernetes launcher places the run on those GPUs.
runs_job = dg.define_asset_job(
    "benchmark_runs_job", selection=["benchmark_runs"], partitions_def=deployments,
    config=dg.PartitionedConfig(partitions_def=deployments,
                                run_config_for_partition_key_fn=lambda _key: {},
                                tags_for_partition_key_fn=partition_run_tags))


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
