"""The main job of the embedded default, run by `make demo` (`servecat demo`)."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from assets.matrix import benchmark_matrix
from bench.matrix import expand_file
from bench.matrix_summary import as_text
from engine.local_models import ensure_model
from pipeline.environment import resources


def run_demo(spec_path: str | Path, echo=print) -> None:
    """Build the `small` model, materialize the matrix of SPEC_PATH, print what it holds."""
    started = time.perf_counter()
    model = ensure_model("small")
    echo(f"model: {model}")
    instance = dg.DagsterInstance.get()
    result = dg.materialize(
        [benchmark_matrix], instance=instance, resources=resources(),
        run_config={"ops": {"benchmark_matrix": {"config": {"spec_path": str(spec_path)}}}},
    )
    if not result.success:
        raise SystemExit("benchmark_matrix failed: see the run in the Dagster UI (make dev)")
    echo(as_text(expand_file(spec_path)))
    echo(f"\ndeployments registered as partitions: "
         f"{len(instance.get_dynamic_partitions('deployments'))}")
    echo(f"demo finished in {time.perf_counter() - started:.1f} s")
