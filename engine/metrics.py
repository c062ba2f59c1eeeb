"""Prometheus text exposition with vLLM's metric names, so dashboards built for vLLM work."""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                   2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class EngineMetrics:
    """Counters, gauges and histograms; `render` writes the text format.

    The engine updates its own (offline use); a server's are counted by its front from each
    request's arrival at the HTTP server, as vLLM's are, with the core's gauges beside them.
    """

    COUNTERS = {
        "prompt_tokens": "Number of prefill tokens processed.",
        "generation_tokens": "Number of generation tokens processed.",
        "num_preemptions": "Cumulative number of preemptions from the engine.",
        "prefix_cache_queries": "Prefix cache queries, in terms of number of queried tokens.",
        "prefix_cache_hits": "Prefix cache hits, in terms of number of cached tokens.",
    }
    HISTOGRAMS = {
        "time_to_first_token_seconds": "Histogram of time to first token in seconds.",
        "inter_token_latency_seconds": "Histogram of inter-token latency in seconds.",
        "time_per_output_token_seconds": "Histogram of time per output token in seconds.",
        "e2e_request_latency_seconds": "Histogram of e2e request latency in seconds.",
        "request_queue_time_seconds": "Histogram of time spent in WAITING phase for request.",
    }

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.lock = threading.Lock()
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.histograms = {name: Histogram() for name in self.HISTOGRAMS}
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0

    def observe(self, name: str, value: float) -> None:
        with self.lock:
            self.histograms[name].observe(value)

    def add(self, name: str, value: int = 1) -> None:
        with self.lock:
            self.counters[name] += value

    # --- what the server's front counts (engine/async_engine.py) ------------------------
    def set_core(self, stats) -> None:
        """The engine core's gauges and counters (an engine.core.CoreStats)."""
        with self.lock:
            self.running, self.waiting, self.kv_usage = stats.running, stats.waiting, stats.kv_usage
            self.counters["num_preemptions"] = stats.num_preemptions
            self.counters["prefix_cache_queries"] = stats.prefix_cache_queries
            self.counters["prefix_cache_hits"] = stats.prefix_cache_hits

    def first_token(self, ttft: float, queue_time: float | None, prompt_tokens: int) -> None:
        with self.lock:
            self.histograms["time_to_first_token_seconds"].observe(ttft)
            if queue_time is not None:
                self.histograms["request_queue_time_seconds"].observe(queue_time)
            self.counters["prompt_tokens"] += prompt_tokens
            self.counters["generation_tokens"] += 1

    def next_token(self, itl: float) -> None:
        with self.lock:
            self.histograms["inter_token_latency_seconds"].observe(itl)
            self.counters["generation_tokens"] += 1

    def finished(self, reason: str, e2e: float, tpot: float | None) -> None:
        with self.lock:
            self.success[reason] = self.success.get(reason, 0) + 1
            self.histograms["e2e_request_latency_seconds"].observe(e2e)
            if tpot is not None:
                self.histograms["time_per_output_token_seconds"].observe(tpot)

    def count_finish(self, reason: str) -> None:
        with self.lock:
            self.success[reason] = self.success.get(reason, 0) + 1

    def render(self) -> str:
        label = f'model_name="{self.model_name}"'
        lines: list[str] = []

        def head(name: str, help_: str, kind: str) -> None:
            lines.extend([f"# HELP vllm:{name} {help_}", f"# TYPE vllm:{name} {kind}"])

        with self.lock:
            for name, value, help_ in (
                ("num_requests_running", self.running, "Number of requests in model execution batches."),
                ("num_requests_waiting", self.waiting, "Number of requests waiting to be processed."),
                ("kv_cache_usage_perc", self.kv_usage, "KV-cache usage. 1 means 100 percent usage."),
                ("gpu_cache_usage_perc", self.kv_usage, "KV-cache usage (older vLLM name)."),
            ):
                head(name, help_, "gauge")
                lines.append(f"vllm:{name}{{{label}}} {value}")
            for name, help_ in self.COUNTERS.items():
                head(f"{name}_total", help_, "counter")
                lines.append(f"vllm:{name}_total{{{label}}} {self.counters[name]}")
            head("request_success_total", "Count of successfully processed requests.", "counter")
            for reason, n in self.success.items():
                lines.append(f'vllm:request_success_total{{{label},finished_reason="{reason}"}} {n}')
            for name, help_ in self.HISTOGRAMS.items():
                h = self.histograms[name]
                head(name, help_, "histogram")
                cum = 0
                for bound, n in zip(h.buckets, h.counts, strict=False):
                    cum += n
                    lines.append(f'vllm:{name}_bucket{{{label},le="{bound}"}} {cum}')
                lines.append(f'vllm:{name}_bucket{{{label},le="+Inf"}} {h.count}')
                lines.append(f"vllm:{name}_sum{{{label}}} {h.sum}")
                lines.append(f"vllm:{name}_count{{{label}}} {h.count}")
        return "\n".join(lines) + "\n"
