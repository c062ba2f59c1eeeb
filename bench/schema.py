"""Result tables: one row per request (REQUEST_SCHEMA) and one row per workload (SUMMARY_SCHEMA).

Metric definitions (DESIGN.md, fixed):
- TTFT: from the request's *scheduled* send time to the first chunk carrying generated text.
- ITL: gaps between consecutive content chunks (a chunk may carry several tokens).
- TPOT: (E2E - TTFT) / (output tokens - 1); null with fewer than 2 output tokens.
- E2E: scheduled send time -> last byte of the response. An open-loop request delayed by the
  client still counts from its scheduled time (no coordinated omission); the delay is kept in
  `client_delay_ms`.
- Output tokens: from the server's `usage`, else counted with the model's tokenizer.
- Throughput over the measured window (first scheduled send -> last byte; warm-up excluded).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from bench.profiles import load_profiles

REQUEST_SCHEMA = pa.schema([
    pa.field("request_index", pa.int64(), nullable=False),
    pa.field("request_id", pa.string()),
    # Seconds since the start of the measured window, all from one monotonic clock.
    pa.field("scheduled_s", pa.float64()),  # when the request was due to be sent
    pa.field("dispatched_s", pa.float64()),  # when the client's scheduler released it
    pa.field("sent_s", pa.float64()),  # when the HTTP request actually started
    pa.field("end_s", pa.float64()),  # the last byte, or when the error surfaced
    pa.field("client_delay_ms", pa.float64()),  # sent - scheduled (scheduler lag + queueing)
    pa.field("dispatch_lag_ms", pa.float64()),  # dispatched - scheduled (the client's own lag)
    pa.field("ttft_ms", pa.float64()),
    pa.field("e2e_ms", pa.float64()),
    pa.field("tpot_ms", pa.float64()),
    pa.field("itl_ms", pa.list_(pa.float64())),
    pa.field("chunk_times_ms", pa.list_(pa.float64())),  # each content chunk, from scheduled
    pa.field("num_chunks", pa.int64()),
    pa.field("input_tokens", pa.int64()),  # the prompt, counted with the model's tokenizer
    pa.field("input_tokens_usage", pa.int64()),  # usage.prompt_tokens when the server sent it
    pa.field("max_tokens", pa.int64()),
    pa.field("output_tokens_usage", pa.int64()),
    pa.field("output_tokens_tokenizer", pa.int64()),
    pa.field("output_tokens", pa.int64()),  # usage if present, else tokenizer
    pa.field("finish_reason", pa.string()),
    pa.field("http_status", pa.int64()),
    pa.field("ok", pa.bool_(), nullable=False),
    pa.field("error_type", pa.string()),
    pa.field("error_message", pa.string()),
])

STATS: tuple[str, ...] = ("mean", "p50", "p90", "p95", "p99")
LATENCY_METRICS: tuple[str, ...] = ("ttft", "itl", "tpot", "e2e")

_BASE_SUMMARY: list[pa.Field] = [
    pa.field("num_requests", pa.int64()),
    pa.field("num_completed", pa.int64()),
    pa.field("num_failed", pa.int64()),
    pa.field("error_rate", pa.float64()),
    pa.field("error_types", pa.string()),  # JSON {error_type: count}
    pa.field("early_stopped", pa.bool_()),
    pa.field("duration_s", pa.float64()),
    pa.field("requests_per_s", pa.float64()),
    pa.field("output_tokens_per_s", pa.float64()),
    pa.field("total_tokens_per_s", pa.float64()),
    pa.field("total_input_tokens", pa.int64()),
    pa.field("total_output_tokens", pa.int64()),
    pa.field("mean_input_tokens", pa.float64()),
    pa.field("mean_output_tokens", pa.float64()),
    *[pa.field(f"{m}_{s}_ms", pa.float64()) for m in LATENCY_METRICS for s in STATS],
    pa.field("client_delay_mean_ms", pa.float64()),
    pa.field("client_delay_p99_ms", pa.float64()),
    pa.field("dispatch_lag_p99_ms", pa.float64()),
    pa.field("dispatch_lag_max_ms", pa.float64()),
    pa.field("target_rate", pa.float64()),  # requests/s asked for; null for a closed loop
    pa.field("achieved_rate", pa.float64()),  # (sent - 1) / (last send - first send)
    pa.field("max_in_flight", pa.int64()),
]


def summary_schema(profile_names: Iterable[str]) -> pa.Schema:
    """The summary schema with `slo_attainment__<profile>` and `goodput_rps__<profile>` columns."""
    per_profile = [pa.field(f"{k}__{name}", pa.float64())
                   for name in profile_names for k in ("slo_attainment", "goodput_rps")]
    return pa.schema([*_BASE_SUMMARY, *per_profile])


# With the profiles of configs/profiles.yaml (what run_workload uses when given none).
SUMMARY_SCHEMA = summary_schema(p.name for p in load_profiles())


@dataclass(slots=True)
class RequestRecord:
    """One request as the client saw it; absolute times from `time.perf_counter()`.

    `reads` keeps every network read with its arrival time until the stream is parsed, so
    chunk timestamps are taken when bytes arrive and parsing costs nothing on the clock.
    `row()` turns it into a REQUEST_SCHEMA row with the metric definitions above.
    """

    request_index: int
    request_id: str
    input_tokens: int
    max_tokens: int
    scheduled: float = float("nan")
    dispatched: float = float("nan")
    sent: float = float("nan")
    end: float = float("nan")
    reads: list[tuple[float, bytes]] = field(default_factory=list)
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    chunk_times: list[float] = field(default_factory=list)  # content chunks only
    text: str = ""
    usage_output: int | None = None
    usage_input: int | None = None
    finish_reason: str | None = None
    output_tokens_tokenizer: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None

    def row(self, t0: float) -> dict[str, object]:
        """The REQUEST_SCHEMA row, times relative to t0 (the start of the measured window)."""
        ok = self.ok and bool(self.chunk_times)
        ms = 1000.0
        ttft = (self.chunk_times[0] - self.scheduled) * ms if ok else None
        e2e = (self.end - self.scheduled) * ms if ok else None
        out = self.usage_output if self.usage_output is not None else self.output_tokens_tokenizer
        tpot = (e2e - ttft) / (out - 1) if ok and out is not None and out > 1 else None
        ct = self.chunk_times
        return {
            "request_index": self.request_index, "request_id": self.request_id,
            "scheduled_s": self.scheduled - t0, "dispatched_s": self.dispatched - t0,
            "sent_s": self.sent - t0, "end_s": self.end - t0,
            "client_delay_ms": (self.sent - self.scheduled) * ms,
            "dispatch_lag_ms": (self.dispatched - self.scheduled) * ms,
            "ttft_ms": ttft, "e2e_ms": e2e, "tpot_ms": tpot,
            "itl_ms": [(b - a) * ms for a, b in zip(ct, ct[1:], strict=False)] if ok else [],
            "chunk_times_ms": [(t - self.scheduled) * ms for t in ct],
            "num_chunks": len(ct),
            "input_tokens": self.input_tokens, "input_tokens_usage": self.usage_input,
            "max_tokens": self.max_tokens,
            "output_tokens_usage": self.usage_output,
            "output_tokens_tokenizer": self.output_tokens_tokenizer,
            "output_tokens": out,
            "finish_reason": self.finish_reason, "http_status": self.http_status,
            "ok": ok, "error_type": self.error_type, "error_message": self.error_message,
        }
