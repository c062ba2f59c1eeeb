"""The servecat code location: `dagster dev -m pipeline.definitions`."""

from __future__ import annotations

import dagster as dg

from assets import catalog, results
from assets.estimates import deployment_estimates
from assets.matrix import benchmark_matrix
from assets.runs import benchmark_runs
from pipeline.backfills import stale_results_backfill
from pipeline.environment import resources
from pipeline.interruptions import interrupted_runs_sensor
from pipeline.measure_first import measure_first_backfill
from pipeline.missed_retries import missed_retries_sensor
from pipeline.requests_sensor import benchmark_request_sensor, sensor_interval
from pipeline.runpod_sensors import runpod_orphan_sensor
from pipeline.schedules import matrix_job, matrix_spec_sensor, runs_job

defs = dg.Definitions(
    assets=[benchmark_matrix, benchmark_runs, results.benchmark_results, catalog.model_catalog,
            deployment_estimates],
    asset_checks=[results.results_schema, results.results_latencies_valid,
                  results.results_error_rate, results.results_complete,
                  catalog.catalog_scores_in_unit_interval, catalog.catalog_ranks_are_permutations,
                  catalog.catalog_has_every_config],
    jobs=[matrix_job, runs_job],
    sensors=[matrix_spec_sensor, benchmark_request_sensor, runpod_orphan_sensor,
             stale_results_backfill, measure_first_backfill, interrupted_runs_sensor,
             missed_retries_sensor,
             # Refreshes results and catalog (and runs their checks) after any deployment's run.
             dg.AutomationConditionSensorDefinition(
                 "catalog_automation", target=dg.AssetSelection.assets(
                     "benchmark_results", "model_catalog", "deployment_estimates"),
                 minimum_interval_seconds=sensor_interval(30),
                 default_status=dg.DefaultSensorStatus.RUNNING)],
    resources=resources(),
    # One process per run: a step subprocess costs seconds, and a benchmark run is one step.
    executor=dg.in_process_executor,
)
