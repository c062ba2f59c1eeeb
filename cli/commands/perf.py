"""`servecat perf ...`: benchmarks that compare servecat with its peers side by side."""

from __future__ import annotations

import click

from cli.main import LazyGroup

PERF_COMMANDS = {
    "engine": "cli.commands.perf_engine:perf_engine",
    "kernels": "cli.commands.perf_kernels:perf_kernels",
    "loadgen": "cli.commands.perf_loadgen:perf_loadgen",
    "api": "cli.commands.perf_api:perf_api",
}


@click.group(cls=LazyGroup, lazy=PERF_COMMANDS)
def perf() -> None:
    """Benchmarks: a table on screen, JSON on disk, ratios against peers measured in one run."""
