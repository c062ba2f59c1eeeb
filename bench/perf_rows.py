"""Rows of `servecat perf engine`: one system on one workload, and how it was measured.

`method` says how: `http` rows went through bench.loadgen to an OpenAI-compatible server (TTFT
from the scheduled send to the first content chunk); `in-process` rows timed an engine's own
loop inside the benchmark process (TTFT from the scheduled arrival to the step that made the
first token). Only rows of one method are ever compared with each other (bench.perf_compare).
Percentiles use bench.metrics.stats for both, and every p99 carries its sample count: a p99 of
64 samples is close to their maximum.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from bench.metrics import column, stats

HTTP = "http"
IN_PROCESS = "in-process"


@dataclass(slots=True)
class PerfRow:
    """One system on one workload. `reference` marks the row its group is compared against
    (the served builtin engine); `engine` is builtin, vllm or hf."""

    system: str
    engine: str
    method: str
    workload: str
    dtype: str
    requests: int
    failed: int
    output_tokens: int
    seconds: float
    tok_s: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    ttft_n: int
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    tpot_n: int
    rate: float | None = None  # open loop: the scheduled arrivals per second
    peak_rss_gib: float | None = None
    load_avg: tuple[float, float] | None = None  # 1-minute load average before, after
    reference: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowId:
    """What names a row apart from its numbers."""

    system: str
    engine: str
    method: str
    workload: str
    dtype: str
    reference: bool = False
    note: str = ""


def row_from_result(rid: RowId, requests: pa.Table, summary: dict) -> PerfRow:
    """A row from bench.loadgen's per-request table and summary (an `http` row)."""
    ok = np.asarray(requests.column("ok").to_pylist(), dtype=bool)
    ttft, tpot = column(requests, "ttft_ms", ok), column(requests, "tpot_ms", ok)
    tok_s = summary["output_tokens_per_s"]
    return PerfRow(
        **asdict(rid), requests=int(summary["num_requests"]), failed=int(summary["num_failed"]),
        output_tokens=int(summary["total_output_tokens"]),
        seconds=round(float(summary["duration_s"]), 2),
        tok_s=None if tok_s is None else round(tok_s, 1), rate=summary["target_rate"],
        **_latency("ttft", ttft), **_latency("tpot", tpot))


def row_from_samples(rid: RowId, ttft_ms: list[float], tpot_ms: list[float], requests: int,
                     output_tokens: int, seconds: float, rate: float | None = None) -> PerfRow:
    """A row from latencies timed inside the process (an `in-process` row)."""
    return PerfRow(
        **asdict(rid), requests=requests, failed=0, output_tokens=output_tokens,
        seconds=round(seconds, 2), tok_s=round(output_tokens / seconds, 1) if seconds else None,
        rate=rate,
        **_latency("ttft", np.asarray(ttft_ms, dtype=float)),
        **_latency("tpot", np.asarray(tpot_ms, dtype=float)))


def _latency(name: str, values: np.ndarray) -> dict:
    values = values[~np.isnan(values)]
    s = stats(values, name)
    return {f"{name}_p50_ms": _r(s[f"{name}_p50_ms"]), f"{name}_p99_ms": _r(s[f"{name}_p99_ms"]),
            f"{name}_n": int(values.size)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def load_avg() -> float:
    """The machine's 1-minute load average (how busy the shared cores were)."""
    return round(os.getloadavg()[0], 2)
