"""The server's own view of a workload, from Prometheus `/metrics` scraped before and after.

vLLM's metric names (our engine exports the same ones): histograms give the server-side mean
TTFT, queue time, E2E and inter-token latency over the workload; counters give preemptions,
token counts and prefix-cache hits; the KV-cache gauge is read after the workload.
"""

from __future__ import annotations

import re

import httpx

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
HISTOGRAMS = {
    "server_ttft_mean_ms": "vllm:time_to_first_token_seconds",
    "server_queue_time_mean_ms": "vllm:request_queue_time_seconds",
    "server_e2e_mean_ms": "vllm:e2e_request_latency_seconds",
    "server_itl_mean_ms": "vllm:inter_token_latency_seconds",
}
COUNTERS = {
    "server_preemptions": "vllm:num_preemptions",
    "server_prompt_tokens": "vllm:prompt_tokens",
    "server_generation_tokens": "vllm:generation_tokens",
    "server_prefix_cache_hits": "vllm:prefix_cache_hits",
    "server_prefix_cache_queries": "vllm:prefix_cache_queries",
}
GAUGES = {"server_kv_cache_usage_perc": "vllm:kv_cache_usage_perc"}
SERVER_COLUMNS = (*HISTOGRAMS, *COUNTERS, *GAUGES)


def parse(text: str) -> dict[str, float]:
    """Metric name -> value, summed over label sets (all servers' label sets are one model)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            try:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
            except ValueError:
                continue
    return out


def _counter(values: dict[str, float], name: str) -> float | None:
    for key in (f"{name}_total", name):
        if key in values:
            return values[key]
    return None


def server_view(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """What the server measured between two scrapes (None where it exports no such metric)."""
    view: dict[str, float | None] = {}
    for column, name in HISTOGRAMS.items():
        n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        view[column] = 1000.0 * total / n if n > 0 else None
    for column, name in COUNTERS.items():
        a, b = _counter(after, name), _counter(before, name)
        view[column] = a - (b or 0.0) if a is not None else None
    for column, name in GAUGES.items():
        view[column] = after.get(name)
    return view


def scrape(metrics_url: str, timeout_s: float = 5.0, headers: dict | None = None) -> dict[str, float]:
    """Parsed `/metrics`, or {} when the server has none (not every engine exports them)."""
    try:
        resp = httpx.get(metrics_url, timeout=timeout_s, headers=headers or {})
    except httpx.HTTPError:
        return {}
    return parse(resp.text) if resp.status_code == 200 else {}
