"""The engine core ceiling: the builtin engine driven in-process, with no HTTP in between.

Same prompts (bench.dataset from the same Workload), limits and load pattern as the served
rows, but requests go straight to `LLMEngine.add_request` and a token counts at the end of the
step that made it. The served builtin row minus this row is what serving over HTTP costs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bench.arrivals import arrival_offsets
from bench.dataset import synthetic_prompts
from bench.peak_rss import PeakRSS
from bench.perf_rows import IN_PROCESS, PerfRow, RowId, load_avg, row_from_samples
from bench.perf_workloads import EngineLimits
from bench.tokens import Tokenizer
from bench.workload import Workload

CEILING = "builtin engine core (in-process ceiling)"
Request = tuple[list[int], int]  # prompt token ids, max_tokens


@dataclass(slots=True)
class Timed:
    """What an in-process run measured, per request in milliseconds."""

    ttft_ms: list[float]
    tpot_ms: list[float]
    requests: int
    output_tokens: int
    seconds: float


def workload_requests(workload: Workload, tok: Tokenizer,
                      encode) -> tuple[list[Request], list[Request]]:
    """The workload's warm-up and measured requests as token ids, exactly the prompts
    bench.loadgen sends, encoded as the server would (ENCODE: text -> ids)."""
    prompts = synthetic_prompts(workload, tok, workload.warmup_requests + workload.requests)
    reqs = [(encode(p.text), p.max_tokens) for p in prompts]
    return reqs[:workload.warmup_requests], reqs[workload.warmup_requests:]


def offsets_of(workload: Workload, n: int) -> list[float] | None:
    """Scheduled arrival offsets (s) of an open-loop workload; None for a closed loop."""
    if workload.load != "rate":
        return None
    w = workload
    return arrival_offsets(w.arrival, w.rate, n, w.burstiness, w.seed).tolist()


def ceiling_engine(model_dir: Path, dtype: str, limits: EngineLimits):
    """The builtin engine as `servecat serve` would build it under LIMITS."""
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    return LLMEngine(EngineConfig(
        str(model_dir), dtype=dtype, max_num_seqs=limits.max_num_seqs,
        max_num_batched_tokens=limits.max_num_batched_tokens,
        kv_cache_memory=limits.kv_cache_gib << 30, num_threads=limits.threads))


def ceiling_row(engine, name: str, workload: Workload, tok: Tokenizer, dtype: str) -> PerfRow:
    """Workload NAME on the in-process engine, warm-up first (a closed loop, not measured)."""
    warm, measured = workload_requests(workload, tok, lambda t: engine.tokenizer(t).input_ids)
    if warm:
        drive(engine, warm, len(warm))
    load0 = load_avg()
    offsets = offsets_of(workload, len(measured))
    with PeakRSS() as rss:
        # On the thread that built the engine, as the served core runs its step loop on the
        # main thread of its own process (engine/core_process.py). Stepping from another
        # thread of the process that built it cost 2x per token here (small, fp32, c=1, quiet
        # 2-core AVX-512 EPYC: TPOT p50 11.2 ms vs 5.5 ms; bf16 6.3 vs 4.1).
        timed = drive(engine, measured, workload.concurrency, offsets)
    row = row_from_samples(RowId(CEILING, "builtin", IN_PROCESS, name, dtype),
                           timed.ttft_ms, timed.tpot_ms, timed.requests, timed.output_tokens,
                           timed.seconds, workload.target_rate)
    row.peak_rss_gib, row.load_avg = rss.gib, (load0, load_avg())
    return row


def drive(engine, reqs: list[Request], concurrency: int | None,
          offsets: list[float] | None = None) -> Timed:
    """Closed loop (CONCURRENCY in flight, the next one added when one ends) or, with OFFSETS,
    open loop (each added at its scheduled time). TTFT counts from the scheduled time."""
    from engine.sequence import SamplingParams

    t0 = time.monotonic()
    tag = f"ceiling-{time.monotonic_ns()}-"
    pending, active, done = deque(range(len(reqs))), [], []
    while pending or active:
        now = time.monotonic()
        while pending and (len(active) < concurrency if offsets is None
                           else t0 + offsets[pending[0]] <= now):
            i = pending.popleft()
            ids, max_tokens = reqs[i]
            seq = engine.add_request(tag + str(i), ids, SamplingParams(
                temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
            active.append((seq, now if offsets is None else t0 + offsets[i]))
        if engine.has_work():
            engine.step()
            done += [a for a in active if a[0].is_finished]
            active = [a for a in active if not a[0].is_finished]
        elif pending:  # open loop, idle until the next arrival
            time.sleep(max(0.0, t0 + offsets[pending[0]] - time.monotonic()))
    return _timed(done, t0)


def _timed(done: list, t0: float) -> Timed:
    ms = 1000.0
    ttft = [(s.first_token_time - at) * ms for s, at in done]
    tpot = [(s.last_token_time - s.first_token_time) * ms / (s.num_output_tokens - 1)
            for s, _ in done if s.num_output_tokens > 1]
    end = max((s.last_token_time for s, _ in done), default=t0)
    return Timed(ttft, tpot, len(done), sum(s.num_output_tokens for s, _ in done), end - t0)
