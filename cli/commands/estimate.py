"""`servecat estimate ...`: physical estimates of the deployments nobody measured, calibrated by
those measured, and their check against the validation fixture."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import click

from servecat.errors import SpecError

HARDWARE = "configs/hardware.yaml"


@click.group()
def estimate() -> None:
    """Roofline estimates calibrated by measurements (source: estimate, with 95% intervals)."""


@estimate.command("show")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--store", default=None,
              help="Result store whose measurements calibrate the roofline "
                   "(default $SERVECAT_STORE or .servecat/store; none there: roofline only).")
@click.option("--profile", "profile_name", default=None, help="Only this profile.")
@click.option("--top", type=int, default=20, show_default=True,
              help="Rows printed per profile, highest estimated capacity first.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write every row as Parquet (.parquet) or CSV (.csv).")
@click.option("--json", "as_json", is_flag=True, help="Print every row as JSON.")
def show_cmd(spec: Path, store: str | None, profile_name: str | None, top: int,
             out: Path | None, as_json: bool) -> None:
    """TTFT, TPOT, throughput and capacity per kept deployment × length profile × profile of
    SPEC, with the assumptions beside the numbers."""
    from bench.matrix import expand_file
    from catalog.estimates import estimates_table
    from servecat.hardware import load_hardware
    from servecat.profiles import load_profiles

    started = time.perf_counter()
    try:
        exp = expand_file(spec)
        table = load_hardware(exp.spec.hardware_table and str(spec.parent / exp.spec.hardware_table))
        profiles = load_profiles()
    except SpecError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    if profile_name is not None and profile_name not in {p.name for p in profiles}:
        raise click.ClickException(f"--profile {profile_name}: no such profile (known: "
                                   f"{', '.join(p.name for p in profiles)})")
    root = store or os.environ.get("SERVECAT_STORE", ".servecat/store")
    store_now = store_measurements(root, profiles)
    rows = estimates_table(exp.configs, store_now.points, table, profiles,
                           summary=store_now.rows if store_now.points is not None else None)
    if profile_name:
        rows = rows[rows["profile"] == profile_name]
    if out is not None:
        _write(rows, out)
    if as_json:
        click.echo(rows.to_json(orient="records", indent=1))
        return
    click.echo(as_text(rows, top))
    fitted = int(rows["measured"].sum())
    click.echo(f"\n{rows.attrs['assumptions']['text']}\ncalibration: "
               f"{'fitted on ' + str(fitted) + ' measured rows of ' + root if fitted else 'none (no measurement in ' + root + '): roofline with a x10 interval'}; "
               f"{len(rows)} rows in {time.perf_counter() - started:.1f} s")


@estimate.command("validate")
@click.option("--fixture", type=click.Path(path_type=Path), default=None,
              help="Folder with summary.parquet (default tests/fixtures/validation).")
@click.option("--seeds", type=int, default=20, show_default=True,
              help="Random orders the sensor's order is compared with.")
@click.option("--model", type=click.Choice(["physical", "queue", "ridge", "factor"]),
              default="physical", show_default=True,
              help="Calibration: the roofline's efficiencies and overheads fitted on the "
                   "measured load levels, closed loops served in mixed steps "
                   "(catalog/mixed_steps.py; what the estimates use), or for comparison the "
                   "same with closed loops as a queue's bounds, a ridge over roofline "
                   "features, or one factor per hardware x engine x quantization, each fitted "
                   "on the operating points.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def validate_cmd(fixture: Path | None, seeds: int, model: str, as_json: bool) -> None:
    """Leave-one-deployment-out MAPE (roofline and calibrated) and 95%-interval coverage per
    metric, and the share measured before every profile's true top 3 is found."""
    from catalog import validation
    from servecat.hardware import load_hardware
    from servecat.profiles import load_profiles

    started = time.perf_counter()
    try:
        summary = validation.load_fixture(fixture or validation.FIXTURE)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    hardware, profiles = load_hardware(), load_profiles()
    m = validation.measured(summary, HARDWARE, profiles)
    _, errors = validation.held_out_errors(m, hardware, profiles, model=model)
    rec = validation.recovery(m, hardware, profiles, seeds=seeds)
    if as_json:
        click.echo(json.dumps({"errors": errors.to_dict("records"), "recovery": rec}, indent=1))
        return
    click.echo(errors.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    click.echo(
        f"\ntop 3 of every model x length profile x profile ({rec['true_top3_deployments']} "
        f"deployments) recovered after measuring {rec['sensor_measured']}/{rec['deployments']} "
        f"({rec['sensor_share']:.0%}) in the sensor's order; random order: "
        f"{rec['random_share_mean']:.0%} on average over {seeds} seeds "
        f"({rec['random_share_min']:.0%}-{rec['random_share_max']:.0%}); no order can do "
        f"better than {rec['true_top3_deployments']}/{rec['deployments']} "
        f"({rec['best_share']:.0%})")
    click.echo(f"validated in {time.perf_counter() - started:.1f} s")


@estimate.command("fixture")
@click.option("--store", required=True, help="Store the validation matrix was measured into.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for summary.parquet.")
def fixture_cmd(store: str, out: Path) -> None:
    """Write a store's measured summary rows as a validation fixture (newest row per config)."""
    rows = summary_rows(store)
    if rows.empty:
        raise click.ClickException(f"no measured summary rows in {store}")
    out.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / "summary.parquet", index=False)
    click.echo(f"{len(rows)} summary rows of {rows['deployment'].nunique()} deployments "
               f"-> {out / 'summary.parquet'}")


def summary_rows(root: str):
    """The store's summary rows (newest per config), empty when nothing is measured."""
    from cli.commands.matrix_plan import store_summary

    rows = store_summary(root)
    if rows.empty or "status" not in rows:
        return rows.iloc[0:0]
    if "measured_at" in rows:
        rows = rows.sort_values("measured_at").drop_duplicates("config_id", keep="last")
    return rows.rename(columns={"status_reason": "skip_reason"}).reset_index(drop=True)


class StoreMeasurements(NamedTuple):
    """What the store at a root holds, read once: its summary rows, and (None when nothing is
    measured) the measured operating points and deployments built from them."""

    rows: object  # pd.DataFrame
    points: object | None
    deployments: object | None


def store_measurements(root: str, profiles) -> StoreMeasurements:
    from catalog.estimates import measured_points
    from catalog.recommend import build_deployments

    rows = summary_rows(root)
    if rows.empty or not (rows["status"] == "ok").any():
        return StoreMeasurements(rows, None, None)
    cat = build_deployments(rows, None, HARDWARE, profiles)
    return StoreMeasurements(rows, measured_points(cat.deployments, cat.levels), cat.deployments)


def as_text(rows, top: int) -> str:
    """Per profile, the TOP rows by estimated capacity: value [95% interval] per metric."""
    lines = []
    for profile, part in rows.groupby("profile", sort=False):
        part = part.sort_values("capacity_rps", ascending=False).head(top)
        lines.append(f"profile {profile} (source: estimate; [95% prediction interval]; "
                     f"* measured too)")
        for r in part.itertuples():
            lines.append(
                f"  {'*' if r.measured else ' '} {r.deployment:<40} {r.lengths:<12} "
                f"capacity {_iv(r.capacity_rps, r.capacity_rps_lo, r.capacity_rps_hi)} req/s  "
                f"TTFT p99 {_iv(r.ttft_p99_ms, r.ttft_p99_ms_lo, r.ttft_p99_ms_hi)} ms  "
                f"TPOT p50 {_iv(r.tpot_p50_ms, r.tpot_p50_ms_lo, r.tpot_p50_ms_hi)} ms  "
                f"out {_iv(r.output_tokens_per_s, r.output_tokens_per_s_lo, r.output_tokens_per_s_hi)} tok/s"
                f"  limit: {r.capacity_limiting}")
    return "\n".join(lines)


def _iv(v: float, lo: float, hi: float) -> str:
    return f"{v:.3g} [{lo:.3g}, {hi:.3g}]"


def _write(rows, out: Path) -> None:
    if out.suffix == ".csv":
        rows.to_csv(out, index=False)
    elif out.suffix == ".parquet":
        rows.to_parquet(out, index=False)
    else:
        raise click.ClickException(f"--out {out}: give a .parquet or .csv file")
