"""The main job of the embedded default, run by `make demo` (`servecat demo`).

matrix -> every deployment partition of the spec -> benchmark_results + model_catalog with their
asset checks, in the Dagster instance at $DAGSTER_HOME (so every run shows in the UI), then the
recommendation for each profile. It prints its own progress; Dagster's logs only with verbose.
A second run skips every finished workload.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg

from assets import catalog, results
from assets.matrix import benchmark_matrix
from assets.runs import benchmark_runs
from bench.matrix import expand_file
from bench.run_files import finished
from catalog.snapshots import load_latest
from engine.local_models import ensure_model
from pipeline.demo_report import Progress, recommendations, results_table, store_counts
from pipeline.environment import resources
from pipeline.requests_sensor import failure_cause
from resources.store import ResultStore, catalog_root
from targets.vllm import vllm_python

# The catalog's step runs its checks with it, so the UI never shows them "Not Evaluated".
CATALOG_STEP = [results.benchmark_results, catalog.model_catalog, results.results_schema,
                results.results_latencies_valid, results.results_error_rate,
                results.results_complete, catalog.catalog_scores_in_unit_interval,
                catalog.catalog_ranks_are_permutations, catalog.catalog_has_every_config]
# Without --verbose a run's event log stays in the instance (and the UI), off the screen.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def demo_specs(spec_path: str | Path) -> list[Path]:
    """SPEC_PATH, plus its vLLM twin (`<name>-vllm.yaml`) when vLLM's environment exists."""
    spec_path = Path(spec_path)
    twin = spec_path.with_name(f"{spec_path.stem}-vllm.yaml")
    return [spec_path, twin] if twin.exists() and vllm_python().exists() else [spec_path]


def run_demo(spec_path: str | Path, echo: Callable[[str], None] = print, verbose: bool = False,
             demand_rps: float | None = None) -> None:
    """Build the `small` model, run the whole pipeline on SPEC_PATH, print the recommendations
    (sized for DEMAND_RPS, else twice each group's highest capacity)."""
    started = time.perf_counter()
    echo(f"model: {ensure_model('small')}")
    instance, res = dg.DagsterInstance.get(), resources()
    specs = demo_specs(spec_path)
    if len(specs) == 1:
        echo(f"vLLM not installed at {vllm_python().parent.parent}: builtin only "
             f"(`make vllm-env` adds a vLLM deployment to the demo)")
    with _dagster_logs(verbose):
        workloads, names = {}, []  # deployment -> {config_id: workload_id}
        for spec in specs:
            _step(echo, instance, f"benchmark_matrix {spec}", _materialize(
                [benchmark_matrix], instance, res, verbose,
                run_config={"ops": {"benchmark_matrix": {"config": {"spec_path": str(spec)}}}}))
            exp = expand_file(spec)
            for key, rows in exp.configs.groupby("deployment", sort=False):
                workloads[str(key)] = dict(zip(rows["config_id"], rows["workload_id"], strict=True))
            names.append(exp.spec.name)
            echo(f"matrix {exp.spec.name}: {len(exp.configs)} workloads in "
                 f"{len(exp.deployments)} deployments")
        failed = _run_deployments(instance, res, workloads, echo, verbose)
        _step(echo, instance, "benchmark_results + model_catalog",
              _materialize(CATALOG_STEP, instance, res, verbose))
    store = res["store"]
    if verbose:
        echo("\n" + results_table(store, res["warehouse"], names))
    echo(store_counts(store, res["warehouse"]))
    snapshot = load_latest(catalog_root(store))
    echo("\n" + recommendations(snapshot.tables["deployments"], snapshot.profiles, workloads,
                                demand_rps))
    echo(f"\ncatalog API on this catalog: .venv/bin/servecat api --store {store.root}")
    echo(f"demo finished in {time.perf_counter() - started:.1f} s"
         + (f"; failed deployments: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


def _run_deployments(instance: dg.DagsterInstance, res: dict, workloads: dict[str, dict],
                     echo: Callable[[str], None], verbose: bool) -> list[str]:
    """Each deployment's partition in turn; a line per finished workload and per deployment.
    Returns the deployments that failed."""
    store = res["store"]
    before = {key: finished(store, key) & set(ids) for key, ids in workloads.items()}
    progress = Progress(len(workloads), sum(map(len, workloads.values())),
                        workloads_done=sum(map(len, before.values())))
    echo(f"benchmark_runs: {progress.line()}")
    failed = []
    for key, ids in workloads.items():
        t0 = time.perf_counter()
        with _watch(store, key, ids, before[key], progress, echo):
            result = _materialize([benchmark_runs], instance, res, verbose, partition_key=key,
                                  tags={"servecat/demo": "1"})
        progress.deployments_done += 1
        wall = time.perf_counter() - t0
        if result.success:
            meta = result.asset_materializations_for_node("benchmark_runs")[0].metadata
            measured, sweep = meta["measured_now"].value, meta["sweep_s"].value
            overhead = (f"; Dagster + target start/stop {wall - sweep:.1f} s" if measured else "")
            echo(f"[{progress.deployments_done}/{progress.deployments}] {key}: ok, "
                 f"{meta['workloads_done'].value}/{meta['workloads'].value} workloads done, "
                 f"{measured} load levels measured now ({wall:.1f} s{overhead}) | "
                 f"{progress.line()}")
        else:
            failed.append(key)
            cause = failure_cause(instance, instance.get_run_by_id(result.run_id))
            echo(f"[{progress.deployments_done}/{progress.deployments}] {key}: FAILED: {cause} "
                 f"(run {result.run_id}; `make dev` shows it) | {progress.line()}")
    return failed


@contextlib.contextmanager
def _watch(store: ResultStore, key: str, ids: dict[str, str], done: set[str],
           progress: Progress, echo: Callable[[str], None], period_s: float = 1.0) -> Iterator[None]:
    """While deployment KEY runs (in this thread), poll the store for workloads it finishes:
    their summary file is the sign, written whole once a workload is done."""
    seen, stop = set(done), threading.Event()

    def poll() -> None:
        new = (finished(store, key) & set(ids)) - seen
        for config_id in sorted(new, key=list(ids).index):  # a workload or two per second
            seen.add(config_id)
            progress.workload_finished()
            echo(f"  {key}: {ids[config_id]} done | {progress.line()}")

    def loop() -> None:
        while not stop.wait(period_s):
            with contextlib.suppress(Exception):  # a half-listed folder: the next poll sees it
                poll()

    thread = threading.Thread(target=loop, name=f"demo-progress-{key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()  # the last workload, finished between two polls


@contextlib.contextmanager
def _dagster_logs(verbose: bool) -> Iterator[None]:
    """Dagster's own Python loggers (instance, code loading) quiet unless VERBOSE."""
    logger = logging.getLogger("dagster")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _materialize(assets: list, instance: dg.DagsterInstance, res: dict, verbose: bool,
                 run_config: dict | None = None, **kw) -> dg.ExecuteInProcessResult:
    config = dict(run_config or {}, **({} if verbose else QUIET))
    return dg.materialize(assets, instance=instance, resources=res, run_config=config,
                          raise_on_error=False, **kw)


def _step(echo: Callable[[str], None], instance: dg.DagsterInstance, name: str,
          result: dg.ExecuteInProcessResult) -> None:
    if not result.success:
        cause = failure_cause(instance, instance.get_run_by_id(result.run_id))
        raise SystemExit(f"{name} failed: {cause} (run {result.run_id}; `make dev` shows it)")
    checks = result.get_asset_check_evaluations()
    failing = [c.check_name for c in checks if not c.passed]
    echo(f"{name}: ok" + (f", {len(checks) - len(failing)}/{len(checks)} checks passed"
                          + (f" (failing: {', '.join(failing)})" if failing else "")
                          if checks else ""))
