"""The benchmark-request sensor: from a POST on the catalog API to partitions and runs."""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

from pathlib import Path

import dagster as dg

from assets.matrix import deployments
from bench.request_spec import expand_request
from catalog.benchmark_requests import BenchmarkRequests
from pipeline.schedules import runs_job
from resources.store import ResultStore, catalog_root, matrix_path

REQUEST_TAG = "servecat/benchmark_request"


@dg.sensor(job=runs_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def benchmark_request_sensor(context: dg.SensorEvaluationContext, store: ResultStore):
    """Validate pending requests, expand their matrices, add partitions, request runs, and move
    each request along: accepted -> running -> done / failed (or rejected with the reason)."""
    root = catalog_root(store)
    requests = BenchmarkRequests(root)
    run_requests, new_keys = [], []
    for req in requests.list("pending"):
        exp, problem = expand_request(req.id, req.model, req.matrix_overrides,
                                      Path(root) / "requests")
        if problem:
            requests.set_status(req.id, "rejected", reason=problem)
            context.log.info(f"{req.id} rejected: {problem}")
            continue
        store.write_parquet(matrix_path(exp.spec.name), exp.configs)
        keys = exp.deployments
        new_keys += keys
        run_requests += [dg.RunRequest(partition_key=k, run_key=f"{req.id}:{k}",
                                       tags={REQUEST_TAG: req.id}) for k in keys]
        requests.set_status(req.id, "accepted", details={"matrix": exp.spec.name,
                                                         "deployments": keys})
    for req in [*requests.list("accepted"), *requests.list("running")]:
        _follow(context.instance, requests, req)
    known = set(context.instance.get_dynamic_partitions(deployments.name))
    add = sorted(set(new_keys) - known)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[deployments.build_add_request(add)] if add else [])


def _follow(instance: dg.DagsterInstance, requests: BenchmarkRequests, req) -> None:
    """Move REQ to running once a run started, and to done/failed once all its runs ended."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_TAG: req.id}))
    expected = len(req.details.get("deployments", []))
    started = [r for r in runs if r.status != dg.DagsterRunStatus.QUEUED
               and r.status != dg.DagsterRunStatus.NOT_STARTED]
    if req.status == "accepted" and started:
        req = requests.set_status(req.id, "running")
    if req.status == "running" and len(runs) >= expected and all(r.is_finished for r in runs):
        failed = [r.tags.get("dagster/partition") for r in runs if not r.is_success]
        if failed:
            requests.set_status(req.id, "failed", reason=f"runs failed for {', '.join(failed)}")
        else:
            requests.set_status(req.id, "done")
