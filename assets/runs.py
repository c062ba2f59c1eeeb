"""`benchmark_runs`: one partition per deployment; start its target, sweep its workloads."""
# No `from __future__ import annotations` here: Dagster resolves config/resource types at runtime.

import json
import tempfile
from pathlib import Path

import dagster as dg

from assets.matrix import benchmark_matrix, deployments
from bench.deployment_run import sweep
from bench.profiles import load_profiles
from bench.quality import probe_deployment, quality_path
from bench.run_files import deployment_configs, finished, outcome_schema, write_outcome
from bench.server_metrics import scrape
from bench.telemetry import gpu_sampler
from catalog.report import results_markdown
from resources.store import ResultStore
from resources.target_resource import TargetsResource
from resources.tracking import Tracking
from servecat.deployment import Deployment
from servecat.run_tags import REMEASURE_TAG
from servecat.store import summary_path


class RunsConfig(dg.Config):
    force: bool = False  # re-measure workloads that already have a summary


# What a deployment key names only by its hash: the engine settings a person looks for.
SETTINGS = ("model", "model_id", "hardware_key", "engine", "quantization", "engine_args")
SETTINGS_TAG = "servecat/{}"
RESULT_COLUMNS = ("config_id", "workload_id", "workload_index", "status", "status_reason",
                  "measured_at", "output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms",
                  "error_rate", "probe_of")


@dg.asset(partitions_def=deployments, deps=[benchmark_matrix], group_name="benchmarks",
          pool="benchmark", kinds={"parquet", "mlflow"})
def benchmark_runs(context: dg.AssetExecutionContext, config: RunsConfig, store: ResultStore,
                   targets: TargetsResource, tracking: Tracking) -> dg.MaterializeResult:
    """Start the deployment's server, run each unfinished workload, write its rows, stop."""
    key = context.partition_key
    configs, matrix_schema = deployment_configs(store, key)
    settings = {k: str(configs[0][k]) for k in SETTINGS if configs[0].get(k) is not None}
    tag_settings(context, settings)
    done = set() if config.force else finished(
        store, key, measured_since=context.run.tags.get(REMEASURE_TAG))
    todo = [c for c in configs if c["config_id"] not in done]
    context.log.info(f"{key}: {len(configs)} workloads, {len(done)} finished, {len(todo)} to run")
    if not todo and store.exists(quality_path(key)):
        return _materialization(store, key, configs, settings, [])
    profiles = load_profiles()
    schema = outcome_schema(matrix_schema, [p.name for p in profiles])
    deployment = Deployment.of(configs)
    run = tracking.start(deployment, {"dagster_run_id": context.run_id})
    log_path = Path(tempfile.mkstemp(prefix=f"{key}-", suffix=".log")[1])

    def record(outcome):
        outcome.config.update({f"target_{k}": v for k, v in target.info().items()})
        uri = write_outcome(store, outcome, schema)
        run.log_workload(int(outcome.config["workload_index"]), outcome.config["workload_id"],
                         outcome.summary)
        if outcome.status != "ok":
            context.log.warning(f"{outcome.config['workload_id']}: {outcome.status}: "
                                f"{outcome.reason}")
        context.log.debug(f"wrote {uri}")

    def recall(probe):
        # A capacity search's probe finished by an earlier run: its summary row, so a resumed
        # search reuses it instead of measuring it again.
        return store.read_parquet(summary_path(key, probe["workload_id"])).to_pylist()[0]

    outcomes, failed, status = [], [], "FAILED"
    try:
        # Inside the try: a target that cannot be made (no launch command, the host lacks the
        # deployment's GPUs) still ends the MLflow run and removes the log.
        target = targets.targets().for_deployment(deployment, log_path)
        with target:
            url = target.metrics_url()
            outcomes = sweep(todo, target.endpoint(), str(configs[0]["model_id"]), profiles,
                             done=done, recall=recall, on_outcome=record,
                             check_alive=target.check_alive,
                             log=context.log.info,
                             scrape=(lambda: scrape(url, headers=target.endpoint().headers))
                             if url else None,
                             # Only GPUs of this host: a remote engine's are the provider's.
                             sampler=gpu_sampler(targets.dcgm_url or None)
                             if target.host_facts.get("gpu_name") else None)
            # Quality beside speed: once per deployment and probe version; never fails the run.
            try:
                target.check_alive()
                ep = target.endpoint()
                probe_deployment(store, key, ep.base_url, ep.model, ep.request_headers(),
                                 log=context.log.info)
            except Exception as exc:
                context.log.warning(f"{key}: quality probe not stored (tried again next run): "
                                    f"{exc}")
        failed = [o for o in outcomes if o.status == "failed"]
        status = "FAILED" if failed else "FINISHED"
    finally:
        run.end(status)
        server_log = log_path.read_text(errors="replace").splitlines()[-200:]
        if server_log:
            context.log.info("server log (last 200 lines):\n" + "\n".join(server_log))
        log_path.unlink(missing_ok=True)
    if failed:
        raise dg.Failure(description=f"{key}: workload {failed[0].config['workload_id']} "
                                     f"failed: {failed[0].reason}")
    return _materialization(store, key, configs, settings, outcomes)


def tag_settings(context: dg.AssetExecutionContext, settings: dict[str, str]) -> None:
    """Tag the run with the deployment's engine settings, which its partition key names only by
    hash, so the Runs page shows them whoever launched it (sensor, backfill, demo, UI); tags the
    launcher set (hardware, placement) are kept."""
    tags = {SETTINGS_TAG.format(k): v for k, v in settings.items()}
    new = {k: v for k, v in tags.items() if k not in context.run.tags}
    if new:
        context.instance.add_run_tags(context.run_id, new)


def _materialization(store: ResultStore, key: str, configs: list[dict], settings: dict[str, str],
                     outcomes: list) -> dg.MaterializeResult:
    """The deployment as it stands now: its settings and every workload's current result, also
    when this run measured nothing (a re-run of a finished deployment), so the partition's newest
    materialization never hides its results behind `measured_now 0`."""
    rows = current_results(store, key)
    ids = {c["config_id"] for c in configs}
    mine = [r for r in rows if r["config_id"] in ids]
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in settings.items() if k != "engine_args"},
        "engine_args": dg.MetadataValue.json(json.loads(settings.get("engine_args") or "{}")),
        "workloads": len(configs),
        "workloads_done": sum(r["status"] in ("ok", "skipped") for r in mine),
        "workloads_failed": sum(r["status"] == "failed" for r in mine),
        "probes": len(rows) - len(mine),
        "summary_rows": len(rows), "request_rows": request_rows(store, key),
        "measured_now": sum(o.status == "ok" for o in outcomes),
        "skipped_now": sum(o.status == "skipped" for o in outcomes),
        # The loads measured now; a search's own outcome (skipped) holds its probes' total again.
        "sweep_s": round(sum((o.summary or {}).get("wall_s", 0.0) for o in outcomes
                             if o.status != "skipped"), 1),
        "results": dg.MetadataValue.md(results_markdown(
            rows, {o.config["config_id"] for o in outcomes})),
    })


def current_results(store: ResultStore, key: str) -> list[dict]:
    """Every summary row of deployment KEY (its workloads and their probes), the columns a
    person reads."""
    rows = []
    for path in store.list(f"runs/summary/deployment={key}/"):
        table = store.read_parquet(path)
        rows += table.select([c for c in RESULT_COLUMNS if c in table.column_names]).to_pylist()
    return rows


def request_rows(store: ResultStore, key: str) -> int:
    return sum(store.read_parquet(p).num_rows for p in store.list(f"runs/requests/deployment={key}/"))
