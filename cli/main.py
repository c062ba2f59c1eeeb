"""The `servecat` command line: subcommands load lazily so `servecat serve` never imports Dagster."""

from __future__ import annotations

import importlib
import importlib.util

import click

# command name -> "module:attribute"; each module owns one command or group.
COMMANDS: dict[str, str] = {
    "models": "cli.commands.models:models",
    "matrix": "cli.commands.matrix:matrix",
    "fleet": "cli.commands.fleet:fleet",
    "serve": "cli.commands.serve:serve",
    "loadgen": "cli.commands.loadgen:loadgen",
    "api": "cli.commands.api:api",
    "perf": "cli.commands.perf:perf",
    "quality": "cli.commands.quality:quality",
    "results": "cli.commands.results:results",
    "estimate": "cli.commands.estimate:estimate",
    "demo": "cli.commands.demo:demo",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._available()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attr = self.lazy[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                if exc.name == module:  # that command is not part of this build
                    return None
                raise
        return super().get_command(ctx, name)

    def _available(self) -> list[str]:
        return [n for n, target in self.lazy.items()
                if importlib.util.find_spec(target.split(":")[0]) is not None]


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="servecat")
def main() -> None:
    """servecat: decide how to serve an LLM (GPU, engine, quantization, settings, cost)."""


if __name__ == "__main__":
    main()
