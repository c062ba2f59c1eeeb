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


@quality.command()
@click.option("--base-url", "--url", "base_url", required=True,
              help="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1.")
@click.option("--model", required=True, help="Model name sent in requests.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Result file: .json (summary and per-item scores) or .parquet (one row per "
                   "choice).")
@click.option("--api-key", default=None, envvar="OPENAI_API_KEY",
              help="Sent as 'Authorization: Bearer KEY' (env OPENAI_API_KEY).")
@click.option("--task-version", default="mc-v1", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N items (a quick check; fewer items, noisier accuracy).")
def tasks(base_url: str, model: str, out: Path | None, api_key: str | None,
          task_version: str, limit: int | None) -> None:
    """Multiple-choice accuracy of the model served at BASE_URL (log-likelihood of each
    choice from prompt logprobs, as lm-evaluation-harness scores it)."""
    import dataclasses

    import httpx

    from bench.mc_tasks import TaskSetError, load_task_set, run_tasks
    from servecat.atomic import write_bytes_atomic, write_parquet_atomic

    if out is not None and out.suffix not in (".json", ".parquet"):
        raise click.BadParameter(f"{out}: give a .json or .parquet file", param_hint="--out")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        task_set = load_task_set(task_version)
        if limit is not None:
            task_set = dataclasses.replace(task_set, items=task_set.items[:limit])
        run = run_tasks(base_url, model, task_set, headers=headers)
    except TaskSetError as exc:
        raise click.BadParameter(str(exc), param_hint="--task-version") from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"{base_url}: {exc}") from exc
    s = run.summary()
    if run.status == "ok":
        click.echo(f"{model} {run.task_version}: accuracy {s['accuracy']:.4f} "
                   f"({s['correct']}/{s['items']} items), length-normalised "
                   f"{s['accuracy_norm']:.4f}")
    else:
        click.echo(f"{model} {run.task_version}: {run.status} ({run.status_reason})")
    if out is not None:
        if out.suffix == ".json":
            write_bytes_atomic(run.to_json().encode(), out)
        else:
            write_parquet_atomic(run.to_table(), out)
        click.echo(f"wrote {out}")
