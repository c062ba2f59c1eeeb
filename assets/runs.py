"""`benchmark_runs`: one partition per deployment; start its target, sweep its workloads."""
# No `from __future__ import annotations` here: Dagster resolves config/resource types at runtime.

import tempfile
from pathlib import Path

import dagster as dg

from assets.matrix import benchmark_matrix, deployments
from bench.deployment_run import sweep
from bench.profiles import load_profiles
from bench.server_metrics import scrape
from resources.run_files import deployment_configs, finished, outcome_schema, write_outcome
from resources.store import ResultStore, summary_path
from resources.target_resource import TargetsResource
from resources.tracking import Tracking


class RunsConfig(dg.Config):
    force: bool = False  # re-measure workloads that already have a summary


@dg.asset(partitions_def=deployments, deps=[benchmark_matrix], group_name="benchmarks",
          pool="benchmark", kinds={"parquet", "mlflow"})
def benchmark_runs(context: dg.AssetExecutionContext, config: RunsConfig, store: ResultStore,
                   targets: TargetsResource, tracking: Tracking) -> dg.MaterializeResult:
    """Start the deployment's server, run each unfinished workload, write its rows, stop."""
    key = context.partition_key
    configs, matrix_schema = deployment_configs(store, key)
    done = set() if config.force else finished(store, key)
    todo = [c for c in configs if c["config_id"] not in done]
    context.log.info(f"{key}: {len(configs)} workloads, {len(done)} finished, {len(todo)} to run")
    if not todo:
        return dg.MaterializeResult(metadata={"workloads": len(configs), "measured_now": 0})
    profiles = load_profiles()
    schema = outcome_schema(matrix_schema, [p.name for p in profiles])
    run = tracking.start(configs[0], {"dagster_run_id": context.run_id})
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
    # The server is sized for the deployment's largest workload.
    deployment = dict(configs[0], **{k: max(c[k] for c in configs)
                                     for k in ("kv_cache_gb", "input_max", "output_max")})
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
                             if url else None)
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
    return dg.MaterializeResult(metadata={
        "workloads": len(configs), "measured_now": sum(o.status == "ok" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "sweep_s": sum((o.summary or {}).get("wall_s", 0.0) for o in outcomes),
        "results": dg.MetadataValue.md(_table(outcomes)),
    })


def _table(outcomes) -> str:
    lines = ["| workload | status | tok/s | p99 TTFT ms | p99 TPOT ms | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for o in outcomes:
        s = o.summary or {}
        lines.append(f"| {o.config['workload_id']} | {o.status} | "
                     f"{s.get('output_tokens_per_s') or 0:.1f} | {s.get('ttft_p99_ms') or 0:.0f} | "
                     f"{s.get('tpot_p99_ms') or 0:.1f} | {s.get('error_rate') or 0:.1%} |")
    return "\n".join(lines)
