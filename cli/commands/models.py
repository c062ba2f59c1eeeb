"""`servecat models build tiny|small`: local random-weight test models."""

from __future__ import annotations

from pathlib import Path

import click

from cli.commands.checks import MAX_SEED, check_writable
from engine.local_models import SHAPES


@click.group()
def models() -> None:
    """Local random-weight test models (no downloads)."""


@models.command("build")
@click.argument("name", type=click.Choice(sorted(SHAPES)))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default .servecat/models/NAME).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed of the random weights (same name + seed, same model).")
def build(name: str, out: Path | None, seed: int) -> None:
    """Build model NAME: Llama architecture (GQA), BPE tokenizer with a chat template."""
    from engine.local_models import build_model, default_model_dir

    check_writable(out or default_model_dir(name), "--out", folder=True)
    try:
        path = build_model(name, out, seed=seed)
    except OSError as exc:
        where = f"--out {str(out)!r}" if out else "the default folder .servecat/models"
        raise click.ClickException(f"cannot write the model to {where}: "
                                   f"{exc.strerror or exc}") from None
    click.echo(f"built {name} at {path}")

