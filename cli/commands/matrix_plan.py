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
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="Also print the N unmeasured deployments to measure first: those most likely "
                   "to enter a profile's top 3 (from the calibrated estimates' intervals), "
                   "with their GPU-hours and $.")
def plan_cmd(spec: Path, fleet_path: Path | None, store: str | None, as_json: bool,
             budget: int | None) -> None:
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
    durations = measured_durations(root)
    result = plan(exp.spec.name, exp.configs, durations, table, fleet)
    order = (measure_first(exp.configs, durations, table, root, budget)
             if budget is not None else None)
    elapsed = time.perf_counter() - started
    if as_json:
        extra = {} if order is None else {"measure_first": order.to_dict("records")}
        click.echo(json.dumps(result.to_dict() | extra
                              | {"store": root, "elapsed_s": round(elapsed, 2)}, indent=2))
        return
    click.echo(as_table(result))
    if order is not None:
        click.echo("\n" + order_table(order, budget))
    click.echo(f"\n{result.assumptions.describe()}\nmeasured durations from {root}; "
               f"planned in {elapsed:.1f} s")


def store_summary(root: str):
    """Every summary row of the store at ROOT (a folder or s3://), empty when there is none."""
    import duckdb
    import pandas as pd

    from resources.store import ResultStore

    store = ResultStore(root=root, s3_endpoint_url=os.environ.get("SERVECAT_S3_ENDPOINT_URL", ""),
                        s3_region=os.environ.get("AWS_REGION", "us-east-1"))
    if not store.list("runs/summary/"):
        return pd.DataFrame()
    con = duckdb.connect()
    if store.is_s3:
        from resources.warehouse import configure_s3

        configure_s3(con, store)
    return con.execute(f"SELECT * FROM read_parquet('{store.uri('runs/summary/*/*.parquet')}', "
                       f"union_by_name = true, hive_partitioning = false)").df()


def measured_durations(root: str):
    """Summary rows of the store at ROOT that have a duration: config_id, deployment, wall_s
    (and target_cold_start_s when targets reported it); empty when nothing is measured yet.
    A capacity search's own row counts (status `skipped`: it is no load level, but its wall_s
    is all its probes'): its probes have config ids of their own, which no plan holds."""
    import pandas as pd

    empty = pd.DataFrame({"config_id": [], "deployment": [], "wall_s": []})
    rows = store_summary(root)
    if "wall_s" not in rows or "status" not in rows:
        return empty
    keep = [c for c in ("config_id", "deployment", "wall_s", "target_cold_start_s") if c in rows]
    search = (rows["search"].astype("boolean").fillna(False).to_numpy(bool) if "search" in rows
              else False)
    done = (rows["status"] == "ok").to_numpy(bool) | search
    return rows.loc[done & rows["wall_s"].notna().to_numpy(bool), keep]


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


def measure_first(configs, durations, table, root: str, budget: int):
    """The BUDGET unmeasured deployments most likely to enter a profile's top 3 (calibrated on
    the store at ROOT), each with its GPU-hours and $ on-demand and the running totals."""
    from bench.plan import Assumptions, deployment_hours
    from catalog.estimates import estimates_table
    from catalog.measure_order import candidates, priorities
    from cli.commands.estimate import store_measurements
    from servecat.profiles import load_profiles

    profiles = load_profiles()
    store = store_measurements(root, profiles)
    points = store.points
    est = estimates_table(configs, points, table, profiles,
                          summary=store.rows if points is not None else None)
    order = priorities(candidates(est, store.deployments), profiles).head(budget)
    hours = deployment_hours(configs, durations, table, Assumptions())
    price = {n: h.on_demand_usd_per_hour for n, h in table.items()}
    per = hours.loc[order["deployment"]]
    order["gpu_hours"] = (per["hours"] * per["gpu_count"]).to_numpy(float)
    order["usd_on_demand"] = order["gpu_hours"] * per["hardware"].map(price).to_numpy(float)
    order["cum_gpu_hours"] = order["gpu_hours"].cumsum()
    order["cum_usd_on_demand"] = order["usd_on_demand"].cumsum()
    order.attrs["calibrated_on"] = 0 if points is None else int(points["capacity_rps"].notna().sum())
    return order


def order_table(order, budget: int) -> str:
    """The measure-first order as a terminal table."""
    lines = [f"measure first (budget {budget}; of the unmeasured deployments, the likeliest to "
             f"be in the top 3 of some model x length profile x profile first; estimates "
             f"calibrated on {order.attrs.get('calibrated_on', 0)} measured rows)", "",
             f"{'#':>3}  {'deployment':<44}{'P(any)':>7}{'P(top3)':>8}  {'best for':<36}"
             f"{'GPU-h':>9}{'$':>10}{'cum GPU-h':>11}{'cum $':>10}"]
    for i, r in enumerate(order.itertuples(), 1):
        lines.append(f"{i:>3}  {r.deployment:<44}{r.p_any_top3:>7.2f}{r.p_top3:>8.2f}  "
                     f"{r.group:<36}"
                     f"{r.gpu_hours:>9.2f}{r.usd_on_demand:>10.2f}{r.cum_gpu_hours:>11.2f}"
                     f"{r.cum_usd_on_demand:>10.2f}")
    if len(order) < budget:
        lines.append(f"(only {len(order)} unmeasured deployments)")
    return "\n".join(lines)
