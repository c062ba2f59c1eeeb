"""`servecat perf loadgen`: the highest request rate the load generator sustains, beside a peer's.

Against a zero-delay local server (bench.scripted_server), a rate is sustained when the
achieved send rate is within 2% of the target, the p99 dispatch lag is under 5 ms and no
request fails. The rate doubles until it is not sustained, then bisects. In the same run the
same search is made with AIPerf and GuideLLM when installed (`make peers-env`; `--peer-bin`).
Then the timing error of our client beside an httpx client's, against a scripted server's
known send times (cli/commands/perf_loadgen_timing.py): what writing bench.http saves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from bench.search import double_then_bisect
from cli.commands.perf_loadgen_guidellm import find_guidellm, guidellm

RATE_TOLERANCE = 0.02
PEERS = ("aiperf", "guidellm")
MAX_DISPATCH_LAG_MS = 5.0
# `make peers-env` builds the peers' venv once per machine (SERVECAT_PEERS_VENV).
PEERS_VENV = Path(os.environ.get("SERVECAT_PEERS_VENV",
                                 Path.home() / ".cache" / "servecat" / "peers-venv"))
PEER_CANDIDATES = (str(PEERS_VENV / "bin" / "aiperf"), ".venv-aiperf/bin/aiperf",
                   ".venv-peers/bin/aiperf")


def sustained(achieved: float | None, target: float, lag_p99_ms: float | None, failed: int) -> bool:
    """The criterion: no failures, achieved within 2% of target, p99 dispatch lag under 5 ms."""
    return bool(failed == 0 and achieved is not None and abs(achieved - target) <= RATE_TOLERANCE * target
            and lag_p99_ms is not None and lag_p99_ms < MAX_DISPATCH_LAG_MS)


def search(probe: Callable[[float], dict], start: float, max_rate: float, steps: int,
           echo: Callable[[str], None]) -> tuple[float | None, list[dict]]:
    """Double from `start` until a probe fails, then `steps` geometric bisections (bench.search)."""
    probes: list[dict] = []

    def run(rate: float) -> bool:
        p = probe(rate)
        probes.append(p)
        echo(f"  {p['tool']:<8} target {rate:>8.1f}/s  achieved {_f(p['achieved_rate'])}/s  "
             f"dispatch lag p99 {_f(p['dispatch_lag_p99_ms'], 2)} ms  failed {p['failed']}  "
             f"-> {'sustained' if p['sustained'] else 'not sustained'}")
        return p["sustained"]

    # Rates span decades: bisect geometrically, to 0.1 req/s; a failing start halves down to start/16.
    good, _ = double_then_bisect(run, start, max_rate, geometric=True,
                                 snap=lambda r: round(r, 1), steps=steps, lowest=start / 16)
    return good, probes


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def ours(url: str, tokenizer: str, seconds: float, arrival: str, realtime: bool) -> Callable:
    from bench.endpoint import Endpoint
    from bench.loadgen import run_workload
    from bench.tokens import Tokenizer
    from bench.workload import Workload

    tok = Tokenizer(tokenizer)

    def probe(rate: float) -> dict:
        n = int(min(max(rate * seconds, 200), 50_000))
        w = Workload(lengths="perf", input_tokens=32, output_tokens=8, load="rate", rate=rate,
                     arrival=arrival, requests=n, warmup_requests=50)
        s = run_workload(Endpoint(url, "scripted"), w, tok, [], realtime=realtime).summary
        return {"tool": "servecat", "target_rate": rate, "requests": n,
                "achieved_rate": s["achieved_rate"], "dispatch_lag_p99_ms": s["dispatch_lag_p99_ms"],
                "failed": s["num_failed"], "sustained": bool(sustained(
                    s["achieved_rate"], rate, s["dispatch_lag_p99_ms"], s["num_failed"]))}

    return probe


def aiperf(binary: str, url: str, tokenizer: str, seconds: float, arrival: str,
           realtime: bool) -> Callable:
    """AIPerf at a rate. Achieved rate from its per-request start times. Its dispatch lag, like
    ours, is request start minus scheduled time: for constant arrivals the schedule is its first
    credit + i / rate; for Poisson (schedule not exported) its credit-issued -> start latency."""
    import numpy as np

    def probe(rate: float) -> dict:
        n = int(min(max(rate * seconds, 200), 50_000))
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [binary, "profile", "-m", "scripted", "--url", url.removesuffix("/v1"),
                   "--endpoint-type", "completions", "--streaming", "--request-rate", str(rate),
                   "--arrival-pattern", arrival, "--request-count", str(n), "--tokenizer", tokenizer,
                   "--prompt-input-tokens-mean", "32", "--output-tokens-mean", "8",
                   "--warmup-request-count", "50", "--artifact-dir", tmp, "--ui", "none",
                   "--no-server-metrics", "--use-server-token-count"]
            if realtime and shutil.which("chrt"):  # the same priority as ours, for all its processes
                cmd = ["chrt", "-f", "10", *cmd]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            records = Path(tmp) / "profile_export.jsonl"
            rows = ([json.loads(x) for x in records.read_text().splitlines() if x.strip()]
                    if records.exists() else [])
        rows = [r for r in rows if r.get("metadata", {}).get("benchmark_phase") == "profiling"]
        rows.sort(key=lambda r: r["metadata"]["credit_issued_ns"])
        start = np.array([r["metadata"]["request_start_ns"] for r in rows], dtype=np.float64) / 1e9
        credit = np.array([r["metadata"]["credit_issued_ns"] for r in rows], dtype=np.float64) / 1e9
        if arrival == "constant" and len(rows):
            lag = (start - (credit[0] + np.arange(len(rows)) / rate)) * 1000
        else:
            lag = (start - credit) * 1000
        ordered = np.sort(start)
        achieved = (len(ordered) - 1) / (ordered[-1] - ordered[0]) if len(ordered) > 1 else None
        lag99 = float(np.percentile(lag, 99)) if lag.size else None
        failed = n - sum(1 for r in rows if not r.get("error")) if proc.returncode == 0 else n
        return {"tool": "aiperf", "target_rate": rate, "requests": n, "achieved_rate": achieved,
                "dispatch_lag_p99_ms": lag99, "failed": failed,
                "sustained": bool(sustained(achieved, rate, lag99, failed)),
                "exit_code": proc.returncode}

    return probe


def find_peer(peer_bin: str | None) -> str | None:
    if peer_bin:
        return peer_bin
    for c in PEER_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("aiperf")


@click.command("loadgen")
@click.option("--tokenizer", type=click.Path(path_type=Path),
              help="Tokenizer dir (default: the local `tiny` test model, built if missing).")
@click.option("--start", "start_rate", type=float, default=100.0, show_default=True)
@click.option("--max-rate", type=float, default=20000.0, show_default=True)
@click.option("--steps", type=int, default=3, show_default=True, help="Bisection steps.")
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Length of one probe.")
@click.option("--arrival", type=click.Choice(["constant", "poisson"]), default="constant",
              show_default=True)
@click.option("--peer/--no-peer", default=True, show_default=True,
              help="Also measure the peers named by --peers.")
@click.option("--peers", default="aiperf,guidellm", show_default=True,
              help="Comma-separated peers to measure (from `make peers-env`).")
@click.option("--peer-bin", help="The aiperf executable (default: the peers' venv, or PATH).")
@click.option("--realtime", is_flag=True,
              help="Both clients at real-time priority where allowed (AIPerf through `chrt -f`).")
@click.option("--timing-requests", type=int, default=150, show_default=True,
              help="Timing error, ours vs httpx: requests per client per round (0 skips it).")
@click.option("--timing-rounds", type=int, default=2, show_default=True,
              help="Timing error: rounds, in ABBA order.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the figures here.")
def perf_loadgen(tokenizer: Path | None, start_rate: float, max_rate: float, steps: int,
                 seconds: float, arrival: str, peer: bool, peers: str, peer_bin: str | None,
                 realtime: bool, timing_requests: int, timing_rounds: int,
                 json_out: Path | None) -> None:
    """Highest sustained request rate: servecat's load generator and, side by side, AIPerf's
    and GuideLLM's; then the timing error of ours beside an httpx client's."""
    from bench.scripted_server import Scenario, scripted_server

    wanted = {p.strip() for p in peers.split(",") if p.strip()} if peer else set()
    if wanted - set(PEERS):
        raise click.BadParameter(f"unknown peer(s) {', '.join(sorted(wanted - set(PEERS)))}; "
                                 f"choose from {', '.join(PEERS)}", param_hint="--peers")
    if tokenizer is None:
        from engine.local_models import build_model, default_model_dir

        tokenizer = default_model_dir("tiny")
        if not (tokenizer / "tokenizer.json").exists():
            build_model("tiny", tokenizer)
    results: dict[str, object] = {"criterion": f"achieved within {RATE_TOLERANCE:.0%} of target, "
                                  f"p99 dispatch lag < {MAX_DISPATCH_LAG_MS:g} ms, no failures",
                                  "arrival": arrival, "seconds_per_probe": seconds, "tools": {}}
    # The server runs at real-time priority where allowed, for every tool alike.
    with scripted_server(Scenario(), realtime=True) as url:
        click.echo(f"zero-delay server at {url}")
        tools: list[tuple[str, Callable]] = [
            ("servecat", ours(url, str(tokenizer), seconds, arrival, realtime))]
        binary = find_peer(peer_bin) if "aiperf" in wanted else None
        if "aiperf" in wanted and binary is None:
            click.echo("AIPerf not found (`make peers-env`, or --peer-bin)")
        if binary:
            tools.append(("aiperf", aiperf(binary, url, str(tokenizer), seconds, arrival, realtime)))
        gl_binary = find_guidellm(PEERS_VENV) if "guidellm" in wanted else None
        if "guidellm" in wanted and gl_binary is None:
            click.echo("GuideLLM not found (`make peers-env`)")
        if gl_binary:
            tools.append(("guidellm", guidellm(gl_binary, url, str(tokenizer), seconds, arrival,
                                               realtime, sustained)))
        for name, probe in tools:
            best, probes = search(probe, start_rate, max_rate, steps, click.echo)
            results["tools"][name] = {"sustained_rate": best, "probes": probes}  # type: ignore[index]
    click.echo("")
    click.echo(f"{'tool':<10}{'sustained req/s':>18}")
    for name, r in results["tools"].items():  # type: ignore[union-attr]
        click.echo(f"{name:<10}{_f(r['sustained_rate']):>18}")
    ours_rate = results["tools"]["servecat"]["sustained_rate"]  # type: ignore[index]
    for name in PEERS:
        peer_rate = results["tools"].get(name, {}).get("sustained_rate")  # type: ignore[union-attr]
        if ours_rate and peer_rate:
            click.echo(f"ratio servecat/{name}: {ours_rate / peer_rate:.2f}")
    if timing_requests > 0:
        from cli.commands.perf_loadgen_timing import measure, print_table

        click.echo("\ntiming error: servecat's client and an httpx client, same scripted server")
        results["timing"] = measure(str(tokenizer), timing_requests, timing_rounds, realtime,
                                    click.echo)
        print_table(results["timing"], click.echo)  # type: ignore[arg-type]
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2))
        click.echo(f"wrote {json_out}")
