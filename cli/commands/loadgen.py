"""`servecat loadgen`: benchmark any OpenAI-compatible endpoint (one workload, a sweep, an SLO search)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.commands.loadgen_options import check_output, load_options, setup, write_file
from cli.commands.loadgen_report import format_summary, level_line, stopped

if TYPE_CHECKING:
    from bench.sweep import SloSearch


@click.group(invoke_without_command=True)
@load_options
@click.option("--out", type=click.Path(path_type=Path), help="Per-request Parquet file.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Summary JSON file.")
@click.pass_context
def loadgen(ctx: click.Context, out: Path | None, json_out: Path | None, **opts) -> None:
    """Run one workload against an OpenAI-compatible endpoint and print its summary."""
    if ctx.invoked_subcommand is not None:
        return
    from bench.errors import EndpointBroken, WorkloadError
    from bench.loadgen import run_workload

    check_output(out, "--out")
    check_output(json_out, "--json")
    run = setup(opts)
    try:
        result = run_workload(run.endpoint, run.workload, run.tokenizer, run.profiles,
                              **run.run_kwargs)
    except WorkloadError as exc:
        raise click.ClickException(str(exc)) from None
    except EndpointBroken as exc:
        click.echo(stopped(exc.result.summary if exc.result else None))
        raise click.ClickException(f"{run.workload.level}: stopped early: {exc}") from None
    click.echo(format_summary(result.summary))
    if out:
        write_file(out, "--out", result.write_requests)
        click.echo(f"wrote {result.requests.num_rows} requests to {out}")
    if json_out:
        write_file(json_out, "--json", lambda p: p.write_text(json.dumps(result.summary, indent=2)))
        click.echo(f"wrote summary to {json_out}")


def _levels(kind: type) -> Callable:
    """A click callback: comma-separated load levels, each > 0."""
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list:
        if value is None:
            return []
        out = []
        for item in value.split(","):
            try:
                level = kind(item.strip())
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise click.BadParameter(f"{item.strip()!r} is not {what} (give e.g. 1,4,16)",
                                         ctx, param) from None
            if not (level > 0 and level < float("inf")):
                raise click.BadParameter(f"{item.strip()!r}: each level must be > 0", ctx, param)
            out.append(level)
        return out
    return parse


@loadgen.command("sweep")
@load_options
@click.option("--concurrencies", callback=_levels(int), help="Comma-separated concurrencies, e.g. 1,4,16.")
@click.option("--rates", callback=_levels(float), help="Comma-separated rates (requests/s), e.g. 1,2,4.")
@click.option("--out", type=click.Path(path_type=Path), help="Parquet file of the summaries.")
def sweep_cmd(concurrencies: list[int], rates: list[float], out: Path | None, **opts) -> None:
    """Run the workload once per concurrency or rate; one summary row each, as it finishes.

    A level whose endpoint breaks (too many failed requests) ends the sweep: the levels before
    it are kept (and written to --out), higher loads are not tried."""
    from bench.errors import EndpointBroken, WorkloadError
    from bench.loadgen import run_workload
    from bench.sweep import levels

    if not concurrencies and not rates:
        raise click.UsageError("give --concurrencies or --rates")
    _no_single_level(opts, "--concurrencies/--rates")
    check_output(out, "--out")
    run = setup(opts)
    rows, broken = [], None
    for w in levels(run.workload, concurrencies, rates):
        try:
            result = run_workload(run.endpoint, w, run.tokenizer, run.profiles, **run.run_kwargs)
        except WorkloadError as exc:
            raise click.ClickException(str(exc)) from None
        except EndpointBroken as exc:
            click.echo(level_line(w.level, exc.result.summary if exc.result else {"early_stopped": True}))
            broken = f"{w.level}: stopped early: {exc}"
            break
        rows.append({"load": w.load, "concurrency": w.concurrency, "rate": w.rate, **result.summary})
        click.echo(level_line(w.level, result.summary))
    if out and rows:
        import pyarrow as pa
        import pyarrow.parquet as pq

        write_file(out, "--out", lambda p: pq.write_table(pa.Table.from_pylist(rows), p))
        click.echo(f"wrote {len(rows)} summaries to {out}")
    if broken:
        raise click.ClickException(f"sweep ended at {broken}")


def _no_single_level(opts: dict, instead: str) -> None:
    """A sweep or search sets each level itself: --concurrency/--rate would be ignored."""
    for flag, key in (("--concurrency", "concurrency"), ("--rate", "rate")):
        if opts[key] is not None:
            raise click.UsageError(f"{flag} sets one load level; this command takes its levels "
                                   f"from {instead}")
    opts["concurrency"] = 1  # the base workload; each level replaces its load


@loadgen.command("slo-search")
@load_options
@click.option("--profile", "profile_name", required=True, help="Profile whose SLOs must hold.")
@click.option("--start", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max", "max_c", type=click.IntRange(min=1), default=1024, show_default=True)
def slo_search_cmd(profile_name: str, start: int, max_c: int, **opts) -> None:
    """Find the highest concurrency whose p99 TTFT and TPOT meet a profile (double, then bisect)."""
    from bench.errors import WorkloadError
    from bench.sweep import slo_search

    if max_c < start:
        raise click.BadParameter(f"{max_c} is below --start {start}", param_hint="'--max'")
    _no_single_level(opts, "--start/--max")
    run = setup(opts)
    by_name = {p.name: p for p in run.profiles}
    if profile_name not in by_name:
        raise click.BadParameter(f"{profile_name!r} is not one of {', '.join(by_name)}",
                                 param_hint="'--profile'")
    profile = by_name[profile_name]
    click.echo(f"profile {profile.name}: p99 TTFT <= {profile.ttft_p99_ms:g} ms, "
               f"p99 TPOT <= {profile.tpot_p99_ms:g} ms")

    def show(c: int, ok: bool, s: dict) -> None:
        click.echo(f"  {'meets' if ok else 'fails'}  " + level_line(f"concurrency {c}", s))

    try:
        found = slo_search(run.endpoint, run.workload, run.tokenizer, profile, start, max_c,
                           on_probe=show, **run.run_kwargs)
    except WorkloadError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"highest concurrency meeting {profile.name}: {_answer(found, start, max_c)}")


def _answer(found: SloSearch, start: int, max_c: int) -> str:
    """The search's answer, saying when it is a bound rather than a measured crossing."""
    if found.best_concurrency is None:
        return f"none (concurrency {start}, the lowest tried, already fails)"
    if found.first_failure is None:
        return f"≥ {found.best_concurrency} (never failed up to --max {max_c})"
    return f"{found.best_concurrency} (fails at {found.first_failure})"


@loadgen.command("scripted-server")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="0 picks a free port.")
@click.option("--scenario", default="{}", show_default=True,
              help='Scenario JSON, e.g. \'{"ttft_ms": [20, 40], "gap_ms": [5, 10]}\'.')
@click.option("--realtime", is_flag=True, help="Real-time priority where allowed.")
def scripted_server_cmd(port: int, scenario: str, realtime: bool) -> None:
    """Serve OpenAI-format SSE with scripted timing (the server the load generator is tested on)."""
    from bench.scripted_server import Scenario
    from bench.scripted_server import main as serve

    try:
        raw = json.loads(scenario)
        Scenario(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise click.BadParameter(f"{scenario!r}: {exc} (a JSON object of Scenario fields)",
                                 param_hint="'--scenario'") from None
    try:
        serve(["--port", str(port), "--scenario", scenario] + (["--realtime"] if realtime else []))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on port {port}: {exc.strerror or exc}") from None
