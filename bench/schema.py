"""The load generator's records: one RequestRecord per request, turned into REQUEST_SCHEMA
rows; the tables and the metric definitions live in servecat/results.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.profiles import load_profiles
from servecat.results import (
    BASE_SUMMARY,
    LATENCY_METRICS,
    REQUEST_SCHEMA,
    STATS,
    summary_schema,
)

__all__ = ["BASE_SUMMARY", "LATENCY_METRICS", "REQUEST_SCHEMA", "STATS", "SUMMARY_SCHEMA",
           "RequestRecord", "summary_schema"]

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
