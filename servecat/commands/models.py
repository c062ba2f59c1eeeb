"""`servecat models build tiny|small`: local random-weight test models."""

from __future__ import annotations

from pathlib import Path

import click

from engine.local_models import SHAPES


@click.group()
def models() -> None:
    """Local random-weight test models (no downloads)."""


@models.command("build")
@click.argument("name", type=click.Choice(sorted(SHAPES)))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output directory (default .servecat/models/NAME).")
@click.option("--seed", type=int, default=0, show_default=True)
def build(name: str, out: Path | None, seed: int) -> None:
    """Build model NAME: Llama architecture (GQA), BPE tokenizer with a chat template."""
    from engine.local_models import build_model

    path = build_model(name, out, seed=seed)
    click.echo(f"built {name} at {path}")
