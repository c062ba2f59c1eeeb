"""The timing error of `servecat perf loadgen`: servecat's client beside an httpx client, both
measuring the same scripted server, whose log says when it really sent each chunk.

bench.http is hand-written (on httptools) because httpx's Python sits between the scheduled send
and the request reaching the server, and between a chunk's arrival and the caller seeing it;
this is the figure that says how much. Each client sends the same prompts, one at a time, to a
server that scripts TTFT 2-10 ms and gaps 1-5 ms per request id (bench.scripted_server) and logs
each chunk's send time on the same monotonic clock. A request's TTFT error is its measured TTFT
minus the scripted TTFT moved by the server's logged lateness: what the client's own path adds
(out through its Python to the server's kernel, back from the kernel to its timestamp). ITL
errors are the same per gap. Rounds run in ABBA order, each on a fresh server, so a drift in the
machine's load falls on both clients.

The httpx client is the usual way to read SSE with httpx, given every advantage ours has: the
same event loop (uvloop), priority and GC setting, bodies encoded before the clock starts, one
keep-alive connection, `AsyncClient.stream` + `aiter_lines` with each line stamped as it is
yielded and the JSON parsed after the stream.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.loadgen import no_gc_pauses, run_async
from bench.scripted_server import Scenario, read_sent_log, script_for, scripted_server

SCENARIO = Scenario(ttft_ms=(2.0, 10.0), gap_ms=(1.0, 5.0), seed=1)
INPUT_TOKENS, OUTPUT_TOKENS = 16, 4
CLIENTS = ("servecat", "httpx")


def errors_vs_server(rows: list[dict], sent_log: dict[tuple[str, int], tuple[float, float]]
                     ) -> dict[str, list[float]]:
    """Signed TTFT errors (per request) and ITL errors (per gap), ms, of the requests in ROWS
    that completed: measured minus scripted, the script moved by the server's logged lateness."""
    out: dict[str, list[float]] = {"ttft": [], "itl": []}
    for row in rows:
        if not row["ok"]:
            continue
        s = script_for(SCENARIO, row["request_id"], row["max_tokens"])
        truth = np.cumsum([s.ttft_ms, *s.gaps_ms])
        late = [sent_log[(row["request_id"], i)] for i in range(len(truth))]
        truth = truth + np.array([(sent - due) * 1000 for due, sent in late])
        measured = np.asarray(row["chunk_times_ms"], dtype=float)
        if len(measured) != len(truth):
            continue  # a chunk split or merged on the way: no per-chunk truth to compare with
        out["ttft"].append(float(measured[0] - truth[0]))
        out["itl"] += [float(x) for x in np.diff(measured) - np.diff(truth)]
    return out


def _servecat_rows(url: str, tokenizer: str, requests: int, warmup: int,
                   realtime: bool) -> list[dict]:
    from bench.endpoint import Endpoint
    from bench.loadgen import run_workload

    w = _workload(requests, warmup)
    table = run_workload(Endpoint(url, "scripted"), w, tokenizer, [], realtime=realtime).requests
    return table.select(["request_id", "max_tokens", "ok", "chunk_times_ms"]).to_pylist()


def _workload(requests: int, warmup: int):
    from bench.workload import Workload

    return Workload(concurrency=1, requests=requests, warmup_requests=warmup,
                    input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)


def _httpx_rows(url: str, tokenizer: str, requests: int, warmup: int,
                realtime: bool) -> list[dict]:
    """The same prompts and request ids as bench.loadgen sends, through httpx."""
    from bench import priority
    from bench.dataset import synthetic_prompts
    from bench.tokens import Tokenizer

    prompts = synthetic_prompts(_workload(requests, warmup), Tokenizer(tokenizer),
                                warmup + requests)
    ids = [f"warmup-{i}" for i in range(warmup)] + [str(i) for i in range(requests)]
    bodies = [json.dumps({"model": "scripted", "prompt": p.text, "max_tokens": p.max_tokens,
                          "stream": True, "stream_options": {"include_usage": True}}).encode()
              for p in prompts]
    with priority.realtime(realtime), no_gc_pauses():
        rows = run_async(_httpx_requests(url, ids, bodies))
    for row, p in zip(rows, prompts, strict=True):
        row["max_tokens"] = p.max_tokens
    return rows[warmup:]


async def _httpx_requests(url: str, ids: list[str], bodies: list[bytes]) -> list[dict]:
    import httpx

    rows = []
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        for rid, body in zip(ids, bodies, strict=True):
            lines: list[tuple[float, str]] = []
            scheduled = time.perf_counter()
            async with client.stream("POST", "/completions", content=body,
                                     headers=headers | {"X-Request-Id": rid}) as resp:
                async for line in resp.aiter_lines():
                    lines.append((time.perf_counter(), line))
            times = [t for t, line in lines if _has_text(line)]
            rows.append({"request_id": rid, "ok": resp.status_code == 200 and bool(times),
                         "chunk_times_ms": [(t - scheduled) * 1000 for t in times]})
    return rows


def _has_text(line: str) -> bool:
    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
        return False
    return any(c.get("text") for c in json.loads(line[5:]).get("choices") or ())


_MEASURE = {"servecat": _servecat_rows, "httpx": _httpx_rows}


def measure(tokenizer: str, requests: int, rounds: int, realtime: bool,
            echo: Callable[[str], None]) -> dict:
    """Both clients' TTFT and ITL errors over ROUNDS rounds (ABBA) of REQUESTS requests each."""
    errors: dict[str, dict[str, list[float]]] = {c: {"ttft": [], "itl": []} for c in CLIENTS}
    order = [c for r in range(rounds) for c in (CLIENTS if r % 2 == 0 else CLIENTS[::-1])]
    load = [round(os.getloadavg()[0], 2)]
    lateness: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, client in enumerate(order):
            log = Path(tmp) / f"sent-{k}.json"
            with scripted_server(SCENARIO, realtime=True, log=log) as url:
                rows = _MEASURE[client](url, tokenizer, requests, 20, realtime)
            sent = read_sent_log(log)
            lateness += [(s - d) * 1000 for d, s in sent.values()]
            for name, values in errors_vs_server(rows, sent).items():
                errors[client][name] += values
            echo(f"  timing round {k + 1}/{len(order)}: {client}, {len(rows)} requests")
    load.append(round(os.getloadavg()[0], 2))
    out: dict = {"scenario": "TTFT 2-10 ms, gaps 1-5 ms, concurrency 1, "
                             f"{OUTPUT_TOKENS} tokens per request",
                 "requests_per_client": requests * rounds, "order": order,
                 "server_lateness_p50_ms": _pct(lateness, 50),
                 "server_lateness_p99_ms": _pct(lateness, 99), "load_avg_1m": load,
                 "clients": {}}
    for client, errs in errors.items():
        out["clients"][client] = {
            "requests": len(errs["ttft"]),
            **{f"{m}_error_{q}_ms": _pct(errs[m], p) for m in ("ttft", "itl")
               for q, p in (("p50", 50), ("p99", 99))},
            "itl_abs_error_p50_ms": _pct(np.abs(errs["itl"]), 50)}
    c = out["clients"]
    out["httpx_minus_servecat_ttft_p50_ms"] = _diff(c["httpx"]["ttft_error_p50_ms"],
                                                    c["servecat"]["ttft_error_p50_ms"])
    out["httpx_minus_servecat_itl_p50_ms"] = _diff(c["httpx"]["itl_error_p50_ms"],
                                                   c["servecat"]["itl_error_p50_ms"])
    return out


def _pct(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def print_table(t: dict, echo: Callable[[str], None]) -> None:
    echo(f"\ntiming error against the scripted server ({t['scenario']}; ms, measured − "
         f"truth; load avg {t['load_avg_1m'][0]}→{t['load_avg_1m'][1]})")
    echo(f"{'client':<10}{'requests':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50':>10}"
         f"{'ITL p99':>10}")
    for name, c in t["clients"].items():
        echo(f"{name:<10}{c['requests']:>9}" + "".join(
            f"{'-' if c[k] is None else format(c[k], '.3f'):>10}"
            for k in ("ttft_error_p50_ms", "ttft_error_p99_ms", "itl_error_p50_ms",
                      "itl_error_p99_ms")))
    echo(f"httpx − servecat: TTFT error p50 {t['httpx_minus_servecat_ttft_p50_ms']} ms, "
         f"ITL error p50 {t['httpx_minus_servecat_itl_p50_ms']} ms (server lateness p50 "
         f"{t['server_lateness_p50_ms']} ms, p99 {t['server_lateness_p99_ms']} ms)")
