"""`servecat matrix plan SPEC [--fleet FILE]`: GPU-hours, dollars and wall time to measure a
matrix on a fleet, from measured durations in the store where they exist."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from servecat.errors import SpecError


@click.command("plan")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path), default=None,
              help="Fleet file: GPUs per type and provider quotas (default configs/fleet.yaml).")
@click.option("--store", default=None,
              help="Result store whose summary rows give measured durations "
                   "(default $SERVECAT_STORE or .servecat/store).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(spec: Path, fleet_path: Path | None, store: str | None, as_json: bool) -> None:
    """GPU-hours, $ on-demand and spot, and wall time on the fleet to measure SPEC's matrix."""
    from bench.matrix import expand_file
    from bench.plan import plan
    from servecat.fleet import load_fleet
    from servecat.hardware import load_hardware

    started = time.perf_counter()
    try:
        exp = expand_file(spec)
        table = load_hardware(exp.spec.hardware_table and str(spec.parent / exp.spec.hardware_table))
        fleet = load_fleet(fleet_path, table)
    except SpecError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    root = store or os.environ.get("SERVECAT_STORE", ".servecat/store")
    result = plan(exp.spec.name, exp.configs, measured_durations(root), table, fleet)
    elapsed = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps(result.to_dict() | {"store": root, "elapsed_s": round(elapsed, 2)},
                              indent=2))
        return
    click.echo(as_table(result))
    click.echo(f"\n{result.assumptions.describe()}\nmeasured durations from {root}; "
               f"planned in {elapsed:.1f} s")


def measured_durations(root: str):
    """Summary rows of the store at ROOT that have a duration: config_id, deployment, wall_s
    (and target_cold_start_s when targets reported it); empty when nothing is measured yet."""
    import duckdb
    import pandas as pd

    from resources.store import ResultStore

    empty = pd.DataFrame({"config_id": [], "deployment": [], "wall_s": []})
    store = ResultStore(root=root, s3_endpoint_url=os.environ.get("SERVECAT_S3_ENDPOINT_URL", ""),
                        s3_region=os.environ.get("AWS_REGION", "us-east-1"))
    if not store.list("runs/summary/"):
        return empty
    con = duckdb.connect()
    if store.is_s3:
        from resources.warehouse import configure_s3

        configure_s3(con, store)
    rows = con.execute(f"SELECT * FROM read_parquet('{store.uri('runs/summary/*/*.parquet')}', "
                       f"union_by_name = true, hive_partitioning = false)").df()
    if "wall_s" not in rows or "status" not in rows:
        return empty
    keep = [c for c in ("config_id", "deployment", "wall_s", "target_cold_start_s") if c in rows]
    return rows.loc[(rows["status"] == "ok") & rows["wall_s"].notna(), keep]


def as_table(result) -> str:
    """The plan as a terminal table, one row per pool and a total."""
    head = (f"{'pool':<12}{'fleet':>6}{'deployments':>13}{'configs':>10}{'measured':>10}"
            f"{'GPU-hours':>12}{'$ on-demand':>14}{'$ spot':>12}{'$ fleet':>12}{'wall':>22}")
    lines = [f"matrix {result.matrix} on fleet {result.fleet} (fleet: its GPUs of the type or "
             f"the provider's quota of runs; $ fleet: at the fleet's spot/on-demand choice)",
             "", head, "-" * len(head)]
    for p in [*result.pools, result.total]:
        if p.pool == "total":
            lines.append("-" * len(head))
        wall = "cannot run" if p.wall_h is None else f"{p.wall_h:,.0f} h ({p.wall_h / 24:,.1f} d)"
        lines.append(f"{p.pool:<12}{p.slots:>6}{p.deployments:>13,}{p.configs:>10,}"
                     f"{p.measured:>10,}{p.gpu_hours:>12,.0f}{p.usd_on_demand:>14,.0f}"
                     f"{p.usd_spot:>12,.0f}{p.usd_fleet:>12,.0f}{wall:>22}")
    notes = [f"{p.pool}: {p.why}" for p in [*result.pools, result.total] if p.why]
    return "\n".join(lines + ([""] + notes if notes else []))
