"""The benchmark-request sensor: from a POST on the catalog API to partitions and runs."""
# No `from __future__ import annotations` here: Dagster inspects these signatures at runtime.

import os
import tempfile
from pathlib import Path

import dagster as dg

from assets.matrix import deployments
from bench.request_spec import expand_request, public_reason
from catalog.benchmark_requests import BenchmarkRequest, BenchmarkRequests
from pipeline.schedules import runs_job
from resources.store import ResultStore, catalog_root
from servecat.store import matrix_path

REQUEST_TAG = "servecat/benchmark_request"


def sensor_interval(default: int) -> int:
    """Seconds between a sensor's ticks: SERVECAT_SENSOR_INTERVAL_S when set (tests and local
    trials tick fast), else DEFAULT."""
    return int(os.environ.get("SERVECAT_SENSOR_INTERVAL_S") or default)


@dg.sensor(job=runs_job, minimum_interval_seconds=sensor_interval(15),
           default_status=dg.DefaultSensorStatus.RUNNING)
def benchmark_request_sensor(context: dg.SensorEvaluationContext, store: ResultStore):
    """Validate pending requests, expand their matrices, add partitions, request runs, and move
    each request along: accepted -> running -> done / failed (or rejected with the reason).
    A request whose handling raises is rejected with the error, so it cannot block the queue."""
    root = catalog_root(store)
    requests = BenchmarkRequests(root)
    run_requests = []
    for req in requests.list("pending"):
        try:
            run_requests += _accept(context, store, requests, req, _spec_folder(store))
        except Exception as exc:
            _reject(context, requests, req, f"could not expand the request: {_describe(exc)}")
    for req in [*requests.list("accepted"), *requests.list("running")]:
        try:
            _follow(context.instance, requests, req)
        except Exception as exc:  # the next tick tries again; the other requests move on
            context.log.warning(f"{req.id}: could not follow its runs: {exc!r}")
    known = set(context.instance.get_dynamic_partitions(deployments.name))
    add = sorted({r.partition_key for r in run_requests} - known)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[deployments.build_add_request(add)] if add else [])


def _spec_folder(store: ResultStore) -> Path:
    """A local folder for a request's expanded spec file: under the store root when it is a
    folder, else (S3) a scratch folder; the matrix itself is written to the store."""
    if store.is_s3:
        return Path(tempfile.gettempdir()) / "servecat-benchmark-requests"
    return Path(store.root) / "requests"


def _accept(context: dg.SensorEvaluationContext, store: ResultStore, requests: BenchmarkRequests,
            req: BenchmarkRequest, folder: Path) -> list[dg.RunRequest]:
    """Expand REQ and mark it accepted with its run requests, or reject it with the reason."""
    exp, problem = expand_request(req.id, req.model, req.matrix_overrides, folder)
    if problem:
        _reject(context, requests, req, problem)
        return []
    store.write_parquet(matrix_path(exp.spec.name), exp.configs)
    keys = exp.deployments
    requests.set_status(req.id, "accepted", details={"matrix": exp.spec.name, "deployments": keys})
    return [dg.RunRequest(partition_key=k, run_key=f"{req.id}:{k}", tags={REQUEST_TAG: req.id})
            for k in keys]


def _describe(exc: Exception) -> str:
    """An unexpected error as a reason the requester may read: its type and message, without
    file names (an OSError's filename is a server path, absolute or not)."""
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return public_reason(f"{type(exc).__name__}: {message}")


def _reject(context: dg.SensorEvaluationContext, requests: BenchmarkRequests,
            req: BenchmarkRequest, reason: str) -> None:
    try:
        requests.set_status(req.id, "rejected", reason=reason)
        context.log.info(f"{req.id} rejected: {reason}")
    except Exception as exc:  # e.g. moved on meanwhile: log it, the other requests go on
        context.log.warning(f"{req.id}: could not reject ({reason}): {exc!r}")


def _follow(instance: dg.DagsterInstance, requests: BenchmarkRequests,
            req: BenchmarkRequest) -> None:
    """Move REQ to running once a run started, and to done/failed once all its runs ended."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_TAG: req.id}))
    expected = len(req.details.get("deployments", []))
    started = [r for r in runs if r.status != dg.DagsterRunStatus.QUEUED
               and r.status != dg.DagsterRunStatus.NOT_STARTED]
    if req.status == "accepted" and started:
        req = requests.set_status(req.id, "running")
    if req.status == "running" and len(runs) >= expected and all(r.is_finished for r in runs):
        failed = [r for r in runs if not r.is_success]
        if failed:
            causes = "; ".join(f"{r.tags.get('dagster/partition')}: {failure_cause(instance, r)}"
                               for r in failed)
            requests.set_status(req.id, "failed", reason=public_reason(f"runs failed: {causes}"))
        else:
            requests.set_status(req.id, "done")


def failure_cause(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Why RUN failed, as its events say: the step's error (a dg.Failure's description, else the
    innermost exception), else the run's own failure message (e.g. its worker died)."""
    steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    for record in steps:
        data = record.dagster_event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        error = data.error
        while error is not None and error.cause is not None:  # Dagster wraps the user's error
            error = error.cause
        if error is not None:
            return error.message.strip()
    ended = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    if ended and ended[-1].dagster_event.message:
        return ended[-1].dagster_event.message
    return f"run {run.run_id} ended {run.status.value}"
