"""Checks several commands share: output paths (before the work that fills them), seeds."""

from __future__ import annotations

import os
from pathlib import Path

import click

# Seeds fit an int64 (every Parquet column and JSON reader); torch.manual_seed takes 64 bits.
MAX_SEED = 2**63 - 1


def check_writable(path: Path, flag: str, folder: bool = False) -> None:
    """PATH can be written (a file, or with FOLDER a folder): it is not the other kind, and its
    nearest existing parent is a folder we may write in; else a BadParameter naming FLAG."""
    hint = f"'{flag}'"
    if folder and path.exists() and not path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a file, not a folder", param_hint=hint)
    if not folder and path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a folder; give a file path", param_hint=hint)
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot create {str(path)!r}: {parent} is not a writable "
                                 "folder", param_hint=hint)
