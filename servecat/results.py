"""The result tables' one definition: what the writer writes, the warehouse views, the asset
checks require and the catalog reads.

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

import pyarrow as pa

# Every result row names its config, deployment (the Dagster partition) and workload.
KEY_COLUMNS: tuple[str, ...] = ("config_id", "deployment", "workload_id")

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

BASE_SUMMARY: list[pa.Field] = [
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
    # Whether the client kept to its schedule (bench/validity.py); an invalid level is no
    # measurement of the server, and says why.
    pa.field("valid", pa.bool_()),
    pa.field("invalid_reason", pa.string()),
]


# GPU telemetry over each workload (bench/telemetry.py), beside the load generator's summary;
# null where the GPUs are not this host's (cpu, remote engines). Per sample: utilisation
# averaged over the deployment's GPUs, memory used and power summed over them.
GPU_FIELDS: list[pa.Field] = [
    pa.field("gpu_samples", pa.int64()),
    pa.field("gpu_util_mean_pct", pa.float64()),
    pa.field("gpu_util_max_pct", pa.float64()),
    pa.field("gpu_memory_used_mean_mib", pa.float64()),
    pa.field("gpu_memory_used_max_mib", pa.float64()),
    pa.field("gpu_power_mean_w", pa.float64()),
    pa.field("gpu_power_max_w", pa.float64()),
]


def summary_schema(profile_names: Iterable[str]) -> pa.Schema:
    """The summary schema with `slo_attainment__<profile>` and `goodput_rps__<profile>` columns."""
    per_profile = [pa.field(f"{k}__{name}", pa.float64())
                   for name in profile_names for k in ("slo_attainment", "goodput_rps")]
    return pa.schema([*BASE_SUMMARY, *per_profile])


# A config's identity in the summary table: the matrix columns the catalog groups and shows.
IDENTITY_COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS, "matrix", "servecat_version", "model", "hardware", "gpu_count", "engine",
    "quantization", "tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens", "lengths",
    "load", "concurrency", "rate",
)
# The measured columns the catalog reads from each summary row.
METRIC_COLUMNS: tuple[str, ...] = (
    "num_requests", "num_completed", "num_failed", "error_rate", "duration_s", "requests_per_s",
    "output_tokens_per_s", "total_tokens_per_s",
    *(f"{m}_{s}_ms" for m in LATENCY_METRICS for s in STATS),
)
SUMMARY_COLUMNS: tuple[str, ...] = IDENTITY_COLUMNS + METRIC_COLUMNS
# What the catalog needs of each request (exact SLO attainment and bootstrap intervals).
REQUEST_COLUMNS: tuple[str, ...] = ("config_id", "ttft_ms", "tpot_ms", "ok")
# What benchmark_results' schema check requires of each table before the catalog reads it.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "summary": (*KEY_COLUMNS, "status", *METRIC_COLUMNS),
    "requests": (*KEY_COLUMNS, "ttft_ms", "e2e_ms", "tpot_ms", "ok"),
}
