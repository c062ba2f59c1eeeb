"""A small HTTP/1.1 GET load generator for the catalog API (`servecat perf api` runs it in its own
process): N keep-alive clients, each either paced at a fixed rate or closed-loop.

Paced: client c sends its k-th request at start + offset_c + k / rate; latency counts from that
scheduled time, so a slow server is not hidden by the client waiting (no coordinated omission).
Closed-loop: each client sends its next request as soon as the previous answer arrives; latency
is then ≈ clients / throughput, so this phase measures the maximum throughput, not latency.

    python -m catalog.loadtest --url http://127.0.0.1:8080 --queries q.json --clients 50 \
        --rate 4 --duration 30 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                   path: str) -> tuple[int, float]:
    """(status, the server's own time in ms from its Server-Timing header, else NaN)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status = int((await reader.readline()).split()[1])
    length, app_ms = 0, float("nan")
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"server-timing" and b"dur=" in value:
            app_ms = float(value.split(b"dur=")[1].split(b";")[0])
    await reader.readexactly(length)
    return status, app_ms


async def _client(c: int, url: str, paths: list[str], rate: float, start: float, end: float,
                  out: list[tuple[float, float, int, float]]) -> None:
    parts = urlsplit(url)
    conn = await asyncio.open_connection(parts.hostname, parts.port)
    rng = np.random.default_rng(c)
    i = int(rng.integers(len(paths)))
    due = start + (rng.random() / rate if rate > 0 else 0.0)
    while True:
        now = time.perf_counter()
        if rate > 0:
            if due >= end:
                break
            if due > now:
                await asyncio.sleep(due - now)
            scheduled, due = due, due + 1.0 / rate
        else:
            if now >= end:
                break
            scheduled = now
        try:
            status, app_ms = await _request(*conn, parts.netloc, paths[i % len(paths)])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status, app_ms = 0, float("nan")  # connection error: count it, reconnect
            conn[1].close()
            conn = await asyncio.open_connection(parts.hostname, parts.port)
        out.append((scheduled, time.perf_counter() - scheduled, status, app_ms))
        i += 1
    conn[1].close()


async def run_load(url: str, paths: list[str], clients: int, rate: float,
                   duration: float) -> dict[str, Any]:
    """Drive URL with CLIENTS clients for DURATION s (RATE req/s each; 0 = closed loop)."""
    out: list[tuple[float, float, int, float]] = []
    start = time.perf_counter() + 0.2
    end = start + duration
    await asyncio.gather(*(_client(c, url, paths, rate, start, end, out) for c in range(clients)))
    return summarize(out, duration, clients, rate)


def summarize(out: list[tuple[float, float, int, float]], duration: float, clients: int,
              rate: float) -> dict[str, Any]:
    lat = np.array([x[1] for x in out]) * 1000.0
    status = np.array([x[2] for x in out], dtype=int)
    ok = status == 200
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    # p95 per second of the run: shows whether slow requests cluster (a stall) or spread out.
    second = (np.array([x[0] for x in out]) - min((x[0] for x in out), default=0)).astype(int)
    per_second = [float(np.percentile(lat[second == s], 95)) for s in np.unique(second)]
    app = np.array([x[3] for x in out])
    app = app[~np.isnan(app)]
    app_pct = {f"api_p{q}_ms": float(np.percentile(app, q)) if len(app) else float("nan")
               for q in (50, 95, 99)}
    return {
        "mode": "paced" if rate > 0 else "closed-loop", "clients": clients, **app_pct,
        "p95_ms_per_second": [round(v, 2) for v in per_second],
        "rate_per_client": rate, "offered_rps": clients * rate if rate > 0 else None,
        "duration_s": duration, "requests": int(len(lat)), "errors": int((~ok).sum()),
        "error_statuses": {str(s): int((status == s).sum()) for s in np.unique(status[~ok])},
        "rps": len(lat) / duration, "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
        "max_ms": float(lat.max()) if len(lat) else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--queries", required=True, help="JSON list of paths with query strings")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s per client; 0 = closed loop")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        from uvloop import run as runner
    except ImportError:
        runner = asyncio.run
    with open(args.queries) as f:
        paths = json.load(f)
    result = runner(run_load(args.url, paths, args.clients, args.rate, args.duration))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
