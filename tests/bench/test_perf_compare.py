"""bench.perf_compare: ratios only between rows measured the same way; serving overhead apart."""

from __future__ import annotations

from bench.perf_compare import ratios, serving_overheads
from bench.perf_rows import HTTP, IN_PROCESS, PerfRow


def row(system: str, engine: str, method: str, workload: str = "A", dtype: str = "fp32",
        tok_s: float = 100.0, ttft: float = 50.0, tpot: float = 10.0, reference: bool = False,
        rate: float | None = None) -> PerfRow:
    return PerfRow(system, engine, method, workload, dtype, requests=8, failed=0,
                   output_tokens=800, seconds=8.0, tok_s=tok_s, ttft_p50_ms=ttft,
                   ttft_p99_ms=2 * ttft, ttft_n=8, tpot_p50_ms=tpot, tpot_p99_ms=2 * tpot,
                   tpot_n=8, reference=reference, rate=rate)


def test_ratios_join_only_rows_of_one_method_dtype_and_workload():
    rows = [
        row("served", "builtin", HTTP, tok_s=200, reference=True),
        row("vllm", "vllm", HTTP, tok_s=100),
        row("vllm bf16", "vllm", HTTP, dtype="bf16", tok_s=50),
        row("ceiling", "builtin", IN_PROCESS, tok_s=400),
        row("hf static", "hf", IN_PROCESS, tok_s=10),
        row("served", "builtin", HTTP, workload="c1", tpot=8, reference=True),
        row("vllm", "vllm", HTTP, workload="c1", tpot=12),
    ]
    got = {(r.workload, r.metric, r.peer): r.value for r in ratios(rows)}
    # >1: the reference is better; higher is better for tok/s, lower for latencies.
    assert got == {("A", "tok_s", "vllm"): 2.0, ("c1", "tpot_p50_ms", "vllm"): 1.5,
                   ("c1", "ttft_p50_ms", "vllm"): 1.0}
    assert all(r.method == HTTP for r in ratios(rows))


def test_in_process_rows_are_never_compared_even_with_each_other():
    rows = [row("ceiling", "builtin", IN_PROCESS, reference=True),
            row("hf static", "hf", IN_PROCESS)]
    assert ratios(rows) == []


def test_serving_overhead_is_served_builtin_against_its_in_process_core():
    rows = [row("served", "builtin", HTTP, tok_s=90, ttft=60, tpot=11, reference=True),
            row("ceiling", "builtin", IN_PROCESS, tok_s=100, ttft=50, tpot=10),
            row("served", "builtin", HTTP, workload="B", reference=True, rate=2.0),
            row("ceiling", "builtin", IN_PROCESS, workload="B", rate=2.0)]
    a, b = serving_overheads(rows)
    assert (a.workload, a.tok_s_lost_pct, a.ttft_p50_added_ms, a.tpot_p50_added_ms) == (
        "A", 10.0, 10.0, 1.0)
    assert b.workload == "B" and b.tok_s_lost_pct is None  # open loop: throughput = arrivals
