"""`servecat loadgen`: benchmark any OpenAI-compatible endpoint (one workload, a sweep, an SLO search)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

LOAD_OPTIONS: list[Callable] = [
    click.option("--url", help="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1."),
    click.option("--model", help="Model name sent in requests."),
    click.option("--tokenizer", help="Tokenizer path or id (default: --model)."),
    click.option("--concurrency", type=int, help="Closed loop: requests in flight."),
    click.option("--rate", type=float, help="Open loop: requests per second."),
    click.option("--arrival", type=click.Choice(["constant", "poisson", "gamma"]),
                 default="poisson", show_default=True),
    click.option("--burstiness", type=float, default=1.0, show_default=True,
                 help="Gamma shape (1 = Poisson, < 1 burstier)."),
    click.option("--max-concurrency", type=int, help="Open loop: cap on requests in flight."),
    click.option("--requests", type=int, default=100, show_default=True),
    click.option("--duration", "duration_s", type=float, help="Stop after this many seconds."),
    click.option("--warmup", "warmup_requests", type=int, default=0, show_default=True),
    click.option("--input-tokens", default="128", show_default=True,
                 help="N | uniform:MIN:MAX | normal:MEAN:STD[:MIN:MAX]"),
    click.option("--output-tokens", default="128", show_default=True, help="Same forms as --input-tokens."),
    click.option("--shared-prefix", "shared_prefix_tokens", type=int, default=0, show_default=True),
    click.option("--api", type=click.Choice(["completions", "chat"]), default="completions",
                 show_default=True),
    click.option("--dataset", type=click.Path(exists=True, path_type=Path),
                 help="JSONL conversations instead of synthetic prompts."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--profiles", "profiles_path", type=click.Path(exists=True, path_type=Path),
                 help="Profiles YAML (default configs/profiles.yaml)."),
    click.option("--extra-body", default="{}", help='JSON merged into each request, e.g. \'{"ignore_eos": true}\'.'),
    click.option("--timeout", "total_timeout_s", type=float, default=600.0, show_default=True,
                 help="Seconds for a whole request."),
    click.option("--realtime", is_flag=True, help="Run the client at real-time priority where allowed."),
    click.option("--progress/--no-progress", default=True, show_default=True),
]


def load_options(fn: Callable) -> Callable:
    for option in reversed(LOAD_OPTIONS):
        fn = option(fn)
    return fn


def _setup(opts: dict) -> tuple:
    from bench.endpoint import Endpoint
    from bench.errors import WorkloadError
    from bench.profiles import load_profiles
    from bench.workload import Workload, parse_length_spec

    if not opts["url"] or not opts["model"]:
        raise click.UsageError("--url and --model are required")
    try:
        lengths = {**parse_length_spec(opts["input_tokens"], "input"),
                   **parse_length_spec(opts["output_tokens"], "output")}
        load = "rate" if opts["rate"] is not None else "concurrency"
        workload = Workload(
            lengths="cli", **lengths, load=load, concurrency=opts["concurrency"] or (None if load == "rate" else 1),
            rate=opts["rate"], arrival=opts["arrival"], burstiness=opts["burstiness"],
            max_concurrency=opts["max_concurrency"], requests=opts["requests"],
            duration_s=opts["duration_s"], warmup_requests=opts["warmup_requests"],
            shared_prefix_tokens=opts["shared_prefix_tokens"], api=opts["api"], seed=opts["seed"])
        extra = json.loads(opts["extra_body"])
    except (WorkloadError, json.JSONDecodeError) as exc:
        raise click.UsageError(str(exc)) from None
    endpoint = Endpoint(opts["url"], opts["model"], total_timeout_s=opts["total_timeout_s"],
                        extra_body=extra)
    profiles = load_profiles(opts["profiles_path"])
    run_kwargs = {"progress": opts["progress"] and sys.stderr.isatty(), "dataset": opts["dataset"],
                  "realtime": opts["realtime"]}
    return endpoint, workload, opts["tokenizer"] or opts["model"], profiles, run_kwargs


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

    endpoint, workload, tokenizer, profiles, kw = _setup(opts)
    if opts["concurrency"] is not None and opts["rate"] is not None:
        raise click.UsageError("give --concurrency or --rate, not both")
    try:
        result = run_workload(endpoint, workload, tokenizer, profiles, **kw)
    except WorkloadError as exc:
        raise click.ClickException(str(exc)) from None
    except EndpointBroken as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.result is not None:
            click.echo(format_summary(exc.result.summary))
        sys.exit(2)
    click.echo(format_summary(result.summary))
    if out:
        result.write_requests(out)
        click.echo(f"wrote {result.requests.num_rows} requests to {out}")
    if json_out:
        json_out.write_text(json.dumps(result.summary, indent=2))
        click.echo(f"wrote summary to {json_out}")


@loadgen.command("sweep")
@load_options
@click.option("--concurrencies", help="Comma-separated concurrencies, e.g. 1,4,16.")
@click.option("--rates", help="Comma-separated rates (requests/s), e.g. 1,2,4.")
@click.option("--out", type=click.Path(path_type=Path), help="Parquet file of the summaries.")
def sweep_cmd(concurrencies: str | None, rates: str | None, out: Path | None, **opts) -> None:
    """Run the workload once per concurrency or rate; one summary row each."""
    import pyarrow as pa

    from bench.sweep import sweep

    if not concurrencies and not rates:
        raise click.UsageError("give --concurrencies or --rates")
    opts["concurrency"] = opts["concurrency"] or 1
    endpoint, workload, tokenizer, profiles, kw = _setup(opts)
    cs = [int(x) for x in concurrencies.split(",")] if concurrencies else []
    rs = [float(x) for x in rates.split(",")] if rates else []
    rows = []
    for w, result in _guard(sweep, endpoint, workload, tokenizer, cs, rs, profiles, **kw):
        row = {"concurrency": w.concurrency, "rate": w.rate, **result.summary}
        rows.append(row)
        click.echo(_sweep_line(row))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out)
        click.echo(f"wrote {len(rows)} summaries to {out}")


@loadgen.command("slo-search")
@load_options
@click.option("--profile", "profile_name", required=True, help="Profile whose SLOs must hold.")
@click.option("--start", type=int, default=1, show_default=True)
@click.option("--max", "max_c", type=int, default=1024, show_default=True)
def slo_search_cmd(profile_name: str, start: int, max_c: int, **opts) -> None:
    """Find the highest concurrency whose p99 TTFT and TPOT meet a profile (double, then bisect)."""
    from bench.sweep import slo_search

    opts["concurrency"] = opts["concurrency"] or 1
    endpoint, workload, tokenizer, profiles, kw = _setup(opts)
    by_name = {p.name: p for p in profiles}
    if profile_name not in by_name:
        raise click.UsageError(f"--profile {profile_name!r} is not one of {', '.join(by_name)}")
    profile = by_name[profile_name]
    click.echo(f"profile {profile.name}: p99 TTFT <= {profile.ttft_p99_ms:g} ms, "
               f"p99 TPOT <= {profile.tpot_p99_ms:g} ms")

    def show(c: int, ok: bool, s: dict) -> None:
        click.echo(f"  concurrency {c:>5}: {'meets' if ok else 'fails'}  " + _sweep_line(s))

    found = _guard(slo_search, endpoint, workload, tokenizer, profile, start, max_c,
                   on_probe=show, **kw)
    click.echo(f"highest concurrency meeting {profile.name}: {found.best_concurrency}")


def _guard(fn: Callable, *args, **kwargs):
    """Call fn; a bad workload or broken endpoint becomes a one-line CLI error."""
    from bench.errors import EndpointBroken, WorkloadError

    try:
        return fn(*args, **kwargs)
    except (WorkloadError, EndpointBroken) as exc:
        raise click.ClickException(str(exc)) from None


def _f(v: object, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _sweep_line(s: dict) -> str:
    return (f"req/s {_f(s.get('requests_per_s'), '{:.2f}')}  out tok/s {_f(s.get('output_tokens_per_s'))}"
            f"  TTFT p99 {_f(s.get('ttft_p99_ms'))} ms  TPOT p99 {_f(s.get('tpot_p99_ms'))} ms"
            f"  errors {_f(s.get('error_rate'), '{:.1%}')}")


def format_summary(s: dict) -> str:
    """The summary as a small text table."""
    lines = [
        f"requests   {s['num_completed']}/{s['num_requests']} ok, error rate {_f(s['error_rate'], '{:.1%}')}"
        + (f"  {s['error_types']}" if s["num_failed"] else ""),
        f"window     {_f(s['duration_s'], '{:.2f}')} s   {_f(s['requests_per_s'], '{:.2f}')} req/s   "
        f"{_f(s['output_tokens_per_s'])} output tok/s   {_f(s['total_tokens_per_s'])} total tok/s",
        f"rate       target {_f(s['target_rate'], '{:.2f}')}  achieved {_f(s['achieved_rate'], '{:.2f}')} req/s   "
        f"client delay p99 {_f(s['client_delay_p99_ms'], '{:.2f}')} ms   dispatch lag p99 "
        f"{_f(s['dispatch_lag_p99_ms'], '{:.2f}')} ms",
        "",
        f"{'ms':<6}" + "".join(f"{k:>10}" for k in ("mean", "p50", "p90", "p95", "p99")),
    ]
    for m in ("ttft", "itl", "tpot", "e2e"):
        lines.append(f"{m.upper():<6}" + "".join(f"{_f(s[f'{m}_{k}_ms'], '{:.2f}'):>10}"
                                                  for k in ("mean", "p50", "p90", "p95", "p99")))
    profiles = [k.split("__", 1)[1] for k in s if k.startswith("slo_attainment__")]
    if profiles:
        lines.append("")
        lines.append(f"{'profile':<14}{'SLO attainment':>16}{'goodput req/s':>16}")
        for p in profiles:
            lines.append(f"{p:<14}{_f(s[f'slo_attainment__{p}'], '{:.1%}'):>16}"
                         f"{_f(s[f'goodput_rps__{p}'], '{:.2f}'):>16}")
    return "\n".join(lines)


@loadgen.command("scripted-server")
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option("--scenario", default="{}", show_default=True,
              help='Scenario JSON, e.g. \'{"ttft_ms": [20, 40], "gap_ms": [5, 10]}\'.')
@click.option("--realtime", is_flag=True, help="Real-time priority where allowed.")
def scripted_server_cmd(port: int, scenario: str, realtime: bool) -> None:
    """Serve OpenAI-format SSE with scripted timing (the server the load generator is tested on)."""
    from bench.scripted_server import main as serve

    serve(["--port", str(port), "--scenario", scenario] + (["--realtime"] if realtime else []))
