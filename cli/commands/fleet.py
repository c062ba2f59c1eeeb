"""`servecat fleet limits`: the run queue's limits (one run per GPU of each type, one per
provider quota slot) generated from a fleet file into Dagster instance configs."""

from __future__ import annotations

from pathlib import Path

import click

from servecat.errors import SpecError


@click.group()
def fleet() -> None:
    """The GPU fleet benchmark runs launch on."""


@fleet.command("limits")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path), default=None,
              help="Fleet file to print the block of (default configs/fleet.yaml).")
@click.option("--write", is_flag=True, help="Rewrite each FILE's generated block in place.")
@click.option("--check", is_flag=True, help="Exit 1 if a FILE's block is out of date.")
def limits_cmd(files: tuple[Path, ...], fleet_path: Path | None, write: bool,
               check: bool) -> None:
    """Print the `concurrency:` block of a fleet, or check / rewrite it in dagster.yaml FILES
    (each names its fleet file in its `# >>> servecat fleet limits` line)."""
    from servecat.fleet import DEFAULT_FLEET, ROOT, load_fleet
    from servecat.fleet_limits import regenerate, render
    from servecat.hardware import load_hardware

    try:
        if not files:
            path = Path(fleet_path or DEFAULT_FLEET).resolve()
            source = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
            table = load_hardware()
            click.echo(render(load_fleet(path, table), table, source), nl=False)
            return
        stale = []
        for file in files:
            current, regenerated = regenerate(file)
            if current == regenerated:
                click.echo(f"{file}: up to date")
            elif write:
                file.write_text(regenerated)
                click.echo(f"{file}: rewritten")
            else:
                stale.append(str(file))
                click.echo(f"{file}: out of date with its fleet file")
    except (SpecError, ValueError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    if stale and (check or not write):
        raise SystemExit(1)
