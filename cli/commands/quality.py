"""`servecat quality`: probe a served model's quality (bench.quality) and compare deployments."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def quality() -> None:
    """Quality beside speed: perplexity, greedy agreement and KL against a reference."""


@quality.command()
@click.option("--url", required=True, help="Base URL of the OpenAI-compatible API, "
              "e.g. http://127.0.0.1:8000/v1.")
@click.option("--model", required=True, help="Model name sent in requests.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet file for the raw probe outputs (written whole).")
@click.option("--api-key", default=None, envvar="OPENAI_API_KEY",
              help="Sent as 'Authorization: Bearer KEY' (env OPENAI_API_KEY).")
@click.option("--probe-version", default="quality-v1", show_default=True)
def probe(url: str, model: str, out: Path, api_key: str | None, probe_version: str) -> None:
    """Run the probe set against URL and store its raw outputs in OUT."""
    import httpx

    from bench.quality import load_probe_set, run_probe
    from bench.quality_compare import perplexity
    from servecat.atomic import write_parquet_atomic

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        run = run_probe(url, model, load_probe_set(probe_version), headers=headers)
    except (httpx.HTTPError, FileNotFoundError) as exc:
        raise click.ClickException(f"{url}: {exc}") from exc
    write_parquet_atomic(run.to_table(), out)
    click.echo(f"{out}: {run.probe_version} {run.status}"
               f"{' (' + run.status_reason + ')' if run.status_reason else ''}, "
               f"{len(run.records)} positions, tokens as {run.token_kind}s, "
               f"perplexity {perplexity(run):.4f}")


@quality.command()
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("runs", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def compare(reference: Path, runs: tuple[Path, ...]) -> None:
    """Quality columns of each of RUNS (and REFERENCE itself) against REFERENCE; each run is
    named by its file name."""
    import pyarrow.parquet as pq

    from bench.quality import ProbeRun
    from bench.quality_compare import compare as compare_runs

    ref = ProbeRun.from_table(pq.read_table(reference))
    click.echo(f"{'deployment':<20} {'status':<8} {'perplexity':>12} {'ratio':>10} "
               f"{'agreement':>10} {'kl':>10} {'positions':>9}")
    for path in (reference, *runs):
        r = compare_runs(ProbeRun.from_table(pq.read_table(path)), ref, reference.stem)
        click.echo(f"{path.stem:<20} {r.status:<8} {r.perplexity:>12.4f} "
                   f"{r.perplexity_ratio:>10.6f} {r.agreement:>10.4f} {r.kl:>10.6f} "
                   f"{r.kl_positions:>9}" + (f"  {r.status_reason}" if r.status_reason else ""))
