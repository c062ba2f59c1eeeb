"""`servecat perf api`: latency and throughput of the catalog API on a synthetic 1M-row catalog.

The API runs in its own process (`servecat api`), the load in another (`python -m
catalog.loadtest`): first paced (each client at a fixed rate, latency from the scheduled send
time), then closed-loop (no think time) for the maximum throughput.

`--compare-params` serves twin routes whose query parameters FastAPI and pydantic parse
(cli/commands/perf_api_twin.py) beside the hand-parsed ones (catalog.params), checks that
both answer the same bytes, and runs paced rounds over the same queries on each, interleaved:
what the hand parser saves at p95 is the difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import numpy as np

from servecat.net import free_port, wait_healthy

TARGET_P95_MS = 10.0


def build_store(store: Path, rows: int, models: int, seed: int) -> dict[str, Any]:
    """Synthetic summary -> build_catalog -> snapshot under STORE; returns what was built."""
    from catalog import build_catalog, load_hardware, load_profiles
    from catalog.recommend import build_deployments
    from catalog.snapshots import write_snapshot
    from catalog.synthetic import LENGTHS, synthetic_summary

    profiles, hardware = load_profiles(), load_hardware()
    t0 = time.perf_counter()
    summary = synthetic_summary(max(rows // len(profiles), 1), models=models, seed=seed)
    df = build_catalog(summary, None, hardware, profiles)
    deployments = build_deployments(summary, None, hardware, profiles)
    built = time.perf_counter() - t0
    write_snapshot(df, store, tables=deployments.tables())
    return {"rows": len(df), "configs": len(summary), "models": models, "build_s": built,
            "model_names": sorted(df["model"].unique()), "profiles": [p.name for p in profiles],
            "lengths": list(LENGTHS)}


def query_mix(model_names: list[str], profiles: list[str], n: int, seed: int,
              lengths: list[str] | None = None) -> list[str]:
    """N request paths: half /v1/recommend (a length profile, a demand, hardware and budget
    filters mixed in), half /v1/catalog (filters, sorts, limit 20)."""
    from catalog.synthetic import LENGTHS

    rng = np.random.default_rng(seed)
    lengths = lengths or list(LENGTHS)
    hardware = ["h100", "a100-80gb", "l4", "h200"]
    sorts = ["rank", "-output_tokens_per_s_per_gpu", "cost_per_mtok_on_demand", "ttft_p99_ms"]
    paths = []
    for i in range(n):  # building the query list, not touching the catalog
        model = model_names[rng.integers(len(model_names))]
        if i % 2 == 0:
            q: dict[str, Any] = {"model": model, "profile": profiles[rng.integers(len(profiles))],
                                 "lengths": lengths[rng.integers(len(lengths))], "limit": 10}
            if rng.random() < 0.5:
                q["demand_rps"] = float(rng.choice([1, 10, 100]))
            if rng.random() < 0.3:
                q["max_usd_per_hour"] = float(rng.choice([5, 50, 500]))
            if rng.random() < 0.3:
                q["hardware"] = hardware[rng.integers(len(hardware))]
            paths.append("/v1/recommend?" + urlencode(q))
        else:
            q = {"model": model, "sort": sorts[rng.integers(len(sorts))], "limit": 20}
            if rng.random() < 0.5:
                q["profile"] = profiles[rng.integers(len(profiles))]
            if rng.random() < 0.3:
                q["hardware"] = hardware[rng.integers(len(hardware))]
            paths.append("/v1/catalog?" + urlencode(q))
    return paths


def pareto_timing(n: int, seed: int) -> tuple[float, int]:
    """Seconds to find the 4-criterion Pareto front of N synthetic configs of one model."""
    from catalog import load_hardware
    from catalog.build import PARETO_CRITERIA
    from catalog.cost import add_cost
    from catalog.pareto import pareto_mask
    from catalog.synthetic import synthetic_summary

    configs = add_cost(synthetic_summary(n, models=1, seed=seed, failed_share=0), load_hardware())
    values = configs[list(PARETO_CRITERIA)].to_numpy(float)
    t0 = time.perf_counter()
    front = pareto_mask(values, list(PARETO_CRITERIA.values()))
    return time.perf_counter() - t0, int(front.sum())


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    def alive() -> None:
        if proc.poll() is not None:
            raise click.ClickException(f"the API exited with {proc.returncode} before serving")

    if wait_healthy(url + "/healthz", timeout, alive):
        return
    raise click.ClickException(f"the API did not serve a catalog within {timeout:.0f} s")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process PID so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _phase(api_pid: int, url: str, queries: Path, clients: int, rate: float, duration: float,
           out: Path) -> dict:
    """One load phase, plus what it cost the API in CPU and how busy the machine was."""
    cpu0, load0 = _cpu_seconds(api_pid), os.getloadavg()[0]
    result = _load(url, queries, clients, rate, duration, out)
    cpu1 = _cpu_seconds(api_pid)
    result["machine_load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if cpu0 is not None and cpu1 is not None and result["requests"]:
        result["api_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / result["requests"]
    return result


def _load(url: str, queries: Path, clients: int, rate: float, duration: float, out: Path) -> dict:
    cmd = [sys.executable, "-m", "catalog.loadtest", "--url", url, "--queries", str(queries),
           "--clients", str(clients), "--rate", str(rate), "--duration", str(duration),
           "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=duration + 120)
    return json.loads(out.read_text())


def _same_answers(url: str, paths: list[str]) -> None:
    """The twin routes must answer byte for byte as the real ones, or the comparison is void."""
    import httpx

    from cli.commands.perf_api_twin import PREFIX

    with httpx.Client(timeout=60) as client:
        for path in paths:
            hand, twin = client.get(url + path), client.get(url + PREFIX + path)
            if (hand.status_code, hand.content) != (twin.status_code, twin.content):
                raise click.ClickException(
                    f"the FastAPI twin answers {path} differently ({twin.status_code} vs "
                    f"{hand.status_code}): {twin.text[:200]}")


_COMPARED = ("p50_ms", "p95_ms", "p99_ms", "api_p50_ms", "api_p95_ms", "api_cpu_ms_per_request")


def _compare_params(api_pid: int, url: str, queries: Path, work: Path, clients: int,
                    rate: float, duration: float, rounds: int) -> dict[str, Any]:
    """Paced rounds over the same queries on the hand-parsed routes and on their FastAPI twins,
    in ABBA order (a drift in the machine's load falls on both); medians over rounds."""
    from cli.commands.perf_api_twin import PREFIX

    paths = json.loads(queries.read_text())
    _same_answers(url, paths[:40])
    files = {"hand": queries, "fastapi": work / "queries-fastapi.json"}
    files["fastapi"].write_text(json.dumps([PREFIX + p for p in paths]))
    runs = []
    for r in range(rounds):
        for parser in ("hand", "fastapi") if r % 2 == 0 else ("fastapi", "hand"):
            click.echo(f"parameters round {r + 1}/{rounds}: {parser}", err=True)
            phase = _phase(api_pid, url, files[parser], clients, rate, duration,
                           work / f"compare-{parser}-{r}.json")
            runs.append({"parser": parser, "round": r, **phase})
    out: dict[str, Any] = {"rounds": runs}
    for parser in files:
        mine = [p for p in runs if p["parser"] == parser]
        out[parser] = {k: float(np.median([p[k] for p in mine])) for k in _COMPARED
                       if all(k in p for p in mine)}
        out[parser]["requests"] = sum(p["requests"] for p in mine)
        out[parser]["errors"] = sum(p["errors"] for p in mine)
    out["p95_difference_ms"] = out["fastapi"]["p95_ms"] - out["hand"]["p95_ms"]
    out["api_p95_difference_ms"] = out["fastapi"]["api_p95_ms"] - out["hand"]["api_p95_ms"]
    return out


@click.command()
@click.option("--rows", type=int, default=1_000_000, show_default=True,
              help="Catalog rows (configs × profiles).")
@click.option("--models", type=int, default=8, show_default=True)
@click.option("--clients", type=int, default=50, show_default=True)
@click.option("--rate", "rate_per_client", type=float, default=4.0, show_default=True,
              help="Paced phase: requests/s per client.")
@click.option("--duration", type=float, default=30.0, show_default=True,
              help="Paced phase length (s).")
@click.option("--closed-duration", type=float, default=10.0, show_default=True,
              help="Closed-loop phase length (s); 0 skips it.")
@click.option("--warmup", type=float, default=3.0, show_default=True,
              help="Closed-loop warm-up before measuring (s).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compare-params", is_flag=True,
              help="Also: paced rounds on twin routes with FastAPI/pydantic query parameters.")
@click.option("--compare-rounds", type=int, default=2, show_default=True,
              help="Paced rounds per parser for --compare-params (interleaved).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the results as JSON here.")
def perf_api(rows: int, models: int, clients: int, rate_per_client: float, duration: float,
             closed_duration: float, warmup: float, seed: int, compare_params: bool,
             compare_rounds: int, json_out: Path | None) -> None:
    """Catalog API under load: p50/p95/p99, req/s and errors over a recommend + catalog mix."""
    with tempfile.TemporaryDirectory(prefix="servecat-perf-api-") as tmp:
        work = Path(tmp)
        click.echo(f"building a synthetic catalog of {rows:,} rows ...", err=True)
        built = build_store(work / "store", rows, models, seed)
        queries = work / "queries.json"
        queries.write_text(json.dumps(query_mix(built["model_names"], built["profiles"], 4000,
                                                seed, built["lengths"])))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = (["-m", "cli.commands.perf_api_twin"] if compare_params
                  else ["-m", "cli.main", "api"])
        api = subprocess.Popen([sys.executable, *server, "--store", str(work / "store"),
                                "--port", str(port)])
        try:
            t0 = time.perf_counter()
            _wait_healthy(url, api, timeout=300)
            load_s = time.perf_counter() - t0
            click.echo(f"API serving after {load_s:.1f} s; warming up ...", err=True)
            if warmup > 0:
                _load(url, queries, clients, 0.0, warmup, work / "warmup.json")
            phases = []
            click.echo(f"paced: {clients} clients × {rate_per_client:g} req/s for {duration:g} s",
                       err=True)
            phases.append(_phase(api.pid, url, queries, clients, rate_per_client, duration,
                                 work / "paced.json"))
            if closed_duration > 0:
                click.echo(f"closed loop: {clients} clients for {closed_duration:g} s", err=True)
                phases.append(_phase(api.pid, url, queries, clients, 0.0, closed_duration,
                                     work / "closed.json"))
            if compare_params:
                compare = _compare_params(api.pid, url, queries, work, clients, rate_per_client,
                                          duration, compare_rounds)
        finally:
            api.terminate()
            api.wait(timeout=30)
    pareto_s, front = pareto_timing(100_000, seed)
    result = {"benchmark": "servecat perf api", "catalog_rows": built["rows"],
              "configs": built["configs"], "models": models, "build_catalog_s": built["build_s"],
              "api_start_s": load_s, "query_mix": "50% /v1/recommend, 50% /v1/catalog (limit 20)",
              "target_p95_ms": TARGET_P95_MS, "phases": phases,
              "pareto_100k_configs_s": pareto_s, "pareto_100k_front": front,
              "meets_target": phases[0]["p95_ms"] < TARGET_P95_MS and phases[0]["errors"] == 0}
    if compare_params:
        result["params_compare"] = compare
    _print_table(result)
    if compare_params:
        _print_compare(compare)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_out}", err=True)


def _print_table(result: dict[str, Any]) -> None:
    click.echo(f"\ncatalog: {result['catalog_rows']:,} rows ({result['configs']:,} configs, "
               f"{result['models']} models), built in {result['build_catalog_s']:.1f} s; "
               f"API ready in {result['api_start_s']:.1f} s")
    header = f"{'phase':<12}{'clients':>8}{'offered/s':>10}{'req/s':>9}{'errors':>8}" \
             f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'API cpu ms/req':>15}{'load avg':>12}"
    click.echo(header)
    click.echo("-" * len(header))
    for p in result["phases"]:
        offered = f"{p['offered_rps']:.0f}" if p["offered_rps"] else "max"
        cpu = p.get("api_cpu_ms_per_request")
        load = "→".join(f"{x:.1f}" for x in p.get("machine_load_avg_1m", []))
        click.echo(f"{p['mode']:<12}{p['clients']:>8}{offered:>10}{p['rps']:>9.1f}{p['errors']:>8}"
                   f"{p['p50_ms']:>9.2f}{p['p95_ms']:>9.2f}{p['p99_ms']:>9.2f}{p['max_ms']:>9.1f}"
                   f"{'' if cpu is None else f'{cpu:.2f}':>15}{load:>12}")
    click.echo(f"Pareto front of 100,000 configs (4 criteria): "
               f"{result['pareto_100k_configs_s'] * 1000:.0f} ms ({result['pareto_100k_front']} on the front)")
    paced = result["phases"][0]
    per_second = paced.get("p95_ms_per_second") or [float("nan")]
    click.echo(f"paced: each client sends at {paced['rate_per_client']:g} req/s from a random "
               f"offset; latency counts from the scheduled send time. p95 per 1-s window: median "
               f"{float(np.median(per_second)):.2f} ms, worst {max(per_second):.1f} ms. "
               f"Time inside the API (Server-Timing): p50 {paced['api_p50_ms']:.2f}, "
               f"p95 {paced['api_p95_ms']:.2f}, p99 {paced['api_p99_ms']:.2f} ms. "
               f"closed-loop: no think time, so latency ≈ clients / throughput.")
    verdict = "meets" if result["meets_target"] else "MISSES"
    click.echo(f"paced p95 {result['phases'][0]['p95_ms']:.2f} ms {verdict} the target "
               f"(< {result['target_p95_ms']:g} ms, no errors)")


def _print_compare(compare: dict[str, Any]) -> None:
    click.echo("\nquery parameters: hand parser (catalog.params) vs FastAPI/pydantic, paced, "
               "same queries, medians over rounds")
    header = f"{'parser':<10}{'requests':>9}{'errors':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}" \
             f"{'API p50':>9}{'API p95':>9}{'API cpu ms/req':>15}"
    click.echo(header)
    click.echo("-" * len(header))
    for parser in ("hand", "fastapi"):
        c = compare[parser]
        cpu = c.get("api_cpu_ms_per_request")
        click.echo(f"{parser:<10}{c['requests']:>9}{c['errors']:>7}{c['p50_ms']:>9.2f}"
                   f"{c['p95_ms']:>9.2f}{c['p99_ms']:>9.2f}{c['api_p50_ms']:>9.3f}"
                   f"{c['api_p95_ms']:>9.3f}{'' if cpu is None else f'{cpu:.3f}':>15}")
    loads = ", ".join("→".join(f"{x:.1f}" for x in r["machine_load_avg_1m"])
                      for r in compare["rounds"])
    click.echo(f"FastAPI − hand: p95 {compare['p95_difference_ms']:+.2f} ms, time inside the API "
               f"p95 {compare['api_p95_difference_ms']:+.3f} ms (load avg per round: {loads})")
