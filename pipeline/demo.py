"""The main job of the embedded default, run by `make demo` (`servecat demo`).

matrix -> every deployment partition of the spec -> benchmark_results -> model_catalog, in the
Dagster instance at $DAGSTER_HOME (so every run shows in the UI), then a summary on screen.
A second run skips every finished workload.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from assets.catalog import model_catalog
from assets.matrix import benchmark_matrix
from assets.results import benchmark_results
from assets.runs import benchmark_runs
from bench.matrix import expand_file
from catalog.snapshots import load_latest
from engine.local_models import ensure_model
from pipeline.demo_report import results_table, top_configs
from pipeline.environment import resources
from resources.store import catalog_root
from resources.vllm_target import vllm_python


def demo_specs(spec_path: str | Path) -> list[Path]:
    """SPEC_PATH, plus its vLLM twin (`<name>-vllm.yaml`) when vLLM's environment exists."""
    spec_path = Path(spec_path)
    twin = spec_path.with_name(f"{spec_path.stem}-vllm.yaml")
    return [spec_path, twin] if twin.exists() and vllm_python().exists() else [spec_path]


def run_demo(spec_path: str | Path, echo=print) -> None:
    """Build the `small` model, then run the whole pipeline on SPEC_PATH and print results."""
    started = time.perf_counter()
    echo(f"model: {ensure_model('small')}")
    instance, res = dg.DagsterInstance.get(), resources()
    specs = demo_specs(spec_path)
    if len(specs) == 1:
        echo(f"vLLM not installed at {vllm_python().parent.parent}: builtin only "
             f"(`make vllm-env` adds a vLLM deployment to the demo)")
    keys, names = [], []
    for spec in specs:
        _step(echo, f"benchmark_matrix {spec}", dg.materialize(
            [benchmark_matrix], instance=instance, resources=res,
            run_config={"ops": {"benchmark_matrix": {"config": {"spec_path": str(spec)}}}}))
        exp = expand_file(spec)
        keys += exp.deployments
        names.append(exp.spec.name)
        echo(f"matrix {exp.spec.name}: {len(exp.configs)} configs in {len(exp.deployments)} "
             f"deployments")
    failed = []
    for i, key in enumerate(keys, 1):
        t0 = time.perf_counter()
        result = dg.materialize([benchmark_runs], instance=instance, resources=res,
                                partition_key=key, raise_on_error=False)
        measured, wall = _measured(result), time.perf_counter() - t0
        sweep = _sweep_seconds(result)
        echo(f"[{i}/{len(keys)}] {key}: {'ok' if result.success else 'FAILED'}, "
             f"{measured} workloads measured now ({wall:.1f} s"
             + (f"; Dagster + target start/stop {wall - sweep:.1f} s = "
                f"{(wall - sweep) / wall:.0%}" if measured else "") + ")")
        if not result.success:
            failed.append(key)
    _step(echo, "benchmark_results + model_catalog", dg.materialize(
        [benchmark_results, model_catalog], instance=instance, resources=res))
    store = res["store"]
    echo("\n" + results_table(store, res["warehouse"], names))
    echo("\n" + top_configs(load_latest(catalog_root(store)).frame, names))
    echo(f"\ncatalog API on this catalog: .venv/bin/servecat api --store {catalog_root(store)}")
    echo(f"demo finished in {time.perf_counter() - started:.1f} s"
         + (f"; failed deployments: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


def _measured(result: dg.ExecuteInProcessResult) -> int:
    mats = result.asset_materializations_for_node("benchmark_runs") if result.success else []
    return mats[0].metadata["measured_now"].value if mats else 0


def _sweep_seconds(result: dg.ExecuteInProcessResult) -> float:
    """Seconds the partition spent inside workloads (the rest is orchestration overhead)."""
    mats = result.asset_materializations_for_node("benchmark_runs") if result.success else []
    return mats[0].metadata["sweep_s"].value if mats and "sweep_s" in mats[0].metadata else 0.0


def _step(echo, name: str, result: dg.ExecuteInProcessResult) -> None:
    if not result.success:
        raise SystemExit(f"{name} failed: see the run in the Dagster UI (make dev)")
    echo(f"{name}: ok")
