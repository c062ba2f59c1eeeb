"""`servecat demo [SPEC]`: the whole pipeline on the embedded default (what `make demo` runs)."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command()
@click.argument("spec", type=click.Path(path_type=Path), default=Path("configs/demo.yaml"))
@click.option("--verbose", is_flag=True, help="Show Dagster's logs and every measured load level.")
@click.option("--demand", "demand_rps", type=float, default=None,
              help="Size replicas for this many req/s (default: twice each group's highest "
                   "capacity).")
def demo(spec: Path, verbose: bool, demand_rps: float | None) -> None:
    """Run the main job on SPEC in the Dagster instance at $DAGSTER_HOME."""
    if not os.environ.get("DAGSTER_HOME"):
        home = Path(".servecat/dagster_home").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    from pipeline.demo import run_demo

    run_demo(spec, echo=click.echo, verbose=verbose, demand_rps=demand_rps)
