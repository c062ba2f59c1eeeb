"""The catalog refreshes after any deployment's run, whatever other partitions are missing or
failed; its metadata names the deployments it lacks; a failed request says why its run failed.
(The same story with the real daemon: test_catalog_refresh_daemon.py.)"""

from __future__ import annotations

import dagster as dg
import yaml

from assets.catalog import (
    catalog_has_every_config,
    catalog_ranks_are_permutations,
    catalog_scores_in_unit_interval,
    model_catalog,
)
from assets.results import (
    benchmark_results,
    results_complete,
    results_error_rate,
    results_latencies_valid,
    results_schema,
)
from assets.runs import benchmark_runs
from catalog.benchmark_requests import BenchmarkRequests
from pipeline.definitions import defs
from pipeline.requests_sensor import benchmark_request_sensor
from resources.target_resource import TargetsResource
from tests.pipeline.support import spec_dict

# A server that dies at start, as one with no GPU would: the run fails with the reason.
FAILING = "{python} -c 'import sys; print(\"no GPU here\"); sys.exit(3)'"
CATALOG = dg.AssetSelection.assets("benchmark_results", "model_catalog")
CATALOG_AND_CHECKS = [benchmark_results, model_catalog, results_schema, results_latencies_valid,
                      results_error_rate, results_complete, catalog_scores_in_unit_interval,
                      catalog_ranks_are_permutations, catalog_has_every_config]


def three_deployments(bench, model) -> list[str]:
    spec = spec_dict(model, levels=(1, 2), requests=4)
    spec["engines"] = [{"name": "openai", "args": {"max_num_seqs": [4, 8, 16]}}]
    bench.spec.write_text(yaml.safe_dump(spec))
    return sorted(bench.matrix())


def requested(result: dg.EvaluateAutomationConditionsResult) -> set[str]:
    """Names of the assets and checks a tick requested."""
    return {getattr(r.key, "name", None) or r.key.to_user_string()
            for r in result.results if r.true_subset.size}


def test_catalog_refreshes_while_other_deployments_are_missing_or_failed(bench_env, tiny_model):
    failed, measured, never_run = three_deployments(bench_env, tiny_model)
    tick = dg.evaluate_automation_conditions(defs, bench_env.instance, asset_selection=CATALOG)
    assert requested(tick) == set()  # nothing measured yet: no empty catalog
    result = bench_env.run(failed, raise_on_error=False,
                           targets=TargetsResource(commands={"openai": FAILING}))
    assert not result.success
    tick = dg.evaluate_automation_conditions(defs, bench_env.instance, asset_selection=CATALOG,
                                             cursor=tick.cursor)
    assert requested(tick) == set()

    bench_env.run(measured)
    tick = dg.evaluate_automation_conditions(defs, bench_env.instance, asset_selection=CATALOG,
                                             cursor=tick.cursor)
    # Both assets, and their checks with them, although one partition failed and one never ran.
    assert requested(tick) == {
        "benchmark_results", "model_catalog", "results_schema", "results_latencies_valid",
        "results_error_rate", "results_complete", "catalog_scores_in_unit_interval",
        "catalog_ranks_are_permutations", "catalog_has_every_config"}

    run = dg.materialize(CATALOG_AND_CHECKS, instance=bench_env.instance,
                         resources=bench_env.resources())
    assert run.success
    meta = run.asset_materializations_for_node(model_catalog.op.name)[0].metadata
    assert (meta["deployments"].value, meta["deployments_registered"].value,
            meta["deployments_lacking"].value, meta["deployments_failed"].value) == (1, 3, 2, 1)
    lacking = meta["lacking"].value
    assert f"| {failed} | last run failed |" in lacking
    assert f"| {never_run} | never run |" in lacking
    assert measured not in lacking
    # Once handled, the next tick asks for nothing more.
    tick = dg.evaluate_automation_conditions(defs, bench_env.instance, asset_selection=CATALOG,
                                             cursor=tick.cursor)
    assert requested(tick) == set()


def test_a_failed_request_says_why_its_run_failed(bench_env, tiny_model):
    requests = BenchmarkRequests(bench_env.store.root)
    req = requests.create(str(tiny_model), {
        "engines": [{"name": "openai"}], "quantizations": ["fp32"],
        "workloads": {"lengths": [{"name": "chat", "input_tokens": 16, "output_tokens": 4}],
                      "loads": [{"concurrency": [1]}], "requests": 4}})

    def tick() -> dg.SensorResult:
        return benchmark_request_sensor(dg.build_sensor_context(
            instance=bench_env.instance, resources={"store": bench_env.store}))

    result = tick()
    [run] = result.run_requests
    for add in result.dynamic_partitions_requests:  # what the daemon does with them
        bench_env.instance.add_dynamic_partitions(add.partitions_def_name, add.partition_keys)
    done = dg.materialize([benchmark_runs], instance=bench_env.instance, partition_key=run.partition_key,
                          tags=run.tags, raise_on_error=False,
                          resources=bench_env.resources(
                              targets=TargetsResource(commands={"openai": FAILING})))
    assert not done.success
    tick()  # accepted -> running
    tick()  # running -> failed, with the cause
    final = requests.get(req.id)
    assert final.status == "failed"
    assert final.reason.startswith(f"runs failed: {run.partition_key}: ")
    assert "exited with code 3" in final.reason and "no GPU here" in final.reason, final.reason
    assert str(bench_env.root) not in final.reason  # no server paths

