"""`servecat matrix expand SPEC`: the test matrix of a spec, its summary and its table."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cli.commands.matrix_plan import plan_cmd
from servecat.errors import SpecError


@click.group()
def matrix() -> None:
    """The benchmark test matrix."""


matrix.add_command(plan_cmd)


@matrix.command("expand")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--summary", is_flag=True, help="Print counts per dimension and pruning reasons.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the kept configs as Parquet.")
def expand_cmd(spec: Path, summary: bool, out: Path | None) -> None:
    """Expand SPEC into one row per config, pruning infeasible combinations."""
    from bench.matrix import expand_file
    from bench.matrix_summary import as_text

    if out is not None and out.is_dir():  # before expanding: the error costs nothing
        raise click.ClickException(f"--out {out}: is a directory; give a .parquet file path")
    started = time.perf_counter()
    try:
        exp = expand_file(spec)
    except SpecError as exc:
        raise click.ClickException(_one_line(str(exc))) from None
    elapsed = time.perf_counter() - started
    if summary or not out:
        click.echo(as_text(exp))
        click.echo(f"\nexpanded in {elapsed:.2f} s")
    if out:
        _write(exp.configs, out)
        click.echo(f"wrote {len(exp.configs):,} configs to {out}")


def _write(configs, out: Path) -> None:
    """Write CONFIGS as Parquet at OUT; a file-system error is one line naming --out."""
    from servecat.atomic import write_parquet_atomic

    try:
        write_parquet_atomic(configs, out)
    except OSError as exc:
        raise click.ClickException(f"--out {out}: cannot write: {exc.strerror or exc}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
