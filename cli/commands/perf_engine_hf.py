"""Hugging Face baselines, in-process: `generate` one at a time, static batches, and
transformers' continuous batching manager, on the same prompts as every other row.

They run inside the benchmark process with no server in front, and each times tokens its own
way, so they are labelled in-process ceilings and no ratio is taken against them
(bench.perf_compare); they show how far plain HF is from a batching engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench.peak_rss import PeakRSS
from bench.perf_rows import IN_PROCESS, PerfRow, RowId, load_avg, row_from_samples
from cli.commands.perf_engine_ceiling import Request, Timed


def hf_model(path: Path, dtype: str, attn: str = "sdpa"):
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype,
                                                attn_implementation=attn).eval()


def hf_row(system: str, workload: str, dtype: str, run: Callable[[], Timed], note: str = "",
           rate: float | None = None) -> PerfRow:
    """Time RUN() -> Timed into an in-process HF row."""
    load0 = load_avg()
    with PeakRSS() as rss:
        timed = run()  # on the thread that loaded the model, as the ceiling rows
    row = row_from_samples(RowId(system, "hf", IN_PROCESS, workload, dtype, note=note),
                           timed.ttft_ms, timed.tpot_ms, timed.requests, timed.output_tokens,
                           timed.seconds, rate)
    row.peak_rss_gib, row.load_avg = rss.gib, (load0, load_avg())
    return row


class StepTimes:
    """A stopping criterion that never stops and records when each new token appeared."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.times.append(time.monotonic())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def run_static(model, reqs: list[Request], batch_size: int, pad_id: int,
               offsets: list[float] | None = None) -> Timed:
    """Left-padded static batches in arrival order; a batch starts when the previous one ends
    with whatever has arrived, and every request in it waits for the longest. OFFSETS: when
    each request arrives (s); None: a closed loop, each scheduled when its batch starts."""
    import torch
    from transformers import StoppingCriteriaList

    closed = offsets is None
    offsets = offsets or [0.0] * len(reqs)
    ttft, tpot, tokens = [], [], 0
    t0 = time.monotonic()
    queue = list(zip(reqs, offsets, strict=True))
    while queue:
        wait = t0 + queue[0][1] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic() - t0
        batch = [q for q in queue[:batch_size] if q[1] <= now]
        queue = queue[len(batch):]
        width = max(len(ids) for (ids, _), _ in batch)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for (p, _), _ in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for (p, _), _ in batch])
        n = max(m for (_, m), _ in batch)
        start = time.monotonic()
        rec = StepTimes()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, pad_token_id=pad_id,
                           stopping_criteria=StoppingCriteriaList([rec]))
        for (_, m), at in batch:
            ttft.append((rec.times[0] - (start if closed else t0 + at)) * 1000)
            if m > 1:
                tpot.append((rec.times[m - 1] - rec.times[0]) * 1000 / (m - 1))
            tokens += m
    return Timed(ttft, tpot, len(reqs), tokens, time.monotonic() - t0)


def run_cb(model, reqs: list[Request], max_batch_tokens: int) -> Timed:
    """transformers' ContinuousBatchingManager (paged attention), all requests at once, with
    the same per-step token budget as our engine."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    gen = GenerationConfig(do_sample=False, max_new_tokens=max(m for _, m in reqs),
                           eos_token_id=None, pad_token_id=model.config.pad_token_id)
    cb = ContinuousBatchingConfig(max_batch_tokens=max_batch_tokens)
    t0 = time.perf_counter()
    results = {}
    with model.continuous_batching_context_manager(generation_config=gen, block=True,
                                                   continuous_batching_config=cb) as mgr:
        for i, (ids, m) in enumerate(reqs):
            mgr.add_request(ids, request_id=f"r{i}", max_new_tokens=m, record_timestamps=True)
        while len(results) < len(reqs):
            res = mgr.get_result(timeout=1)
            if res is not None and res.is_finished():
                results[res.request_id] = res
            elif res is None and not mgr.is_running():
                raise RuntimeError("transformers' continuous batching stopped")
    seconds = time.perf_counter() - t0
    ttft, tpot, tokens = [], [], 0
    for res in results.values():
        ts = res.timestamps or []
        tokens += len(res.generated_tokens)
        if ts:
            ttft.append((ts[0] - t0) * 1000)
            if len(ts) > 1:
                tpot.append((ts[-1] - ts[0]) * 1000 / (len(ts) - 1))
    return Timed(ttft, tpot, len(reqs), tokens, seconds)


def hf_rows(model_dir: Path, dtype: str, reqs: dict[str, list[Request]],
            b_offsets: list[float] | None, b_rate: float | None, skip: set[str], sequential: int,
            max_batch_tokens: int, add: Callable[[PerfRow], PerfRow],
            say: Callable[[str], None]) -> None:
    """The HF rows on the measured requests of workloads A, B and c1 (REQS by name; B arrives
    at B_OFFSETS, B_RATE per second), each handed to ADD. One at a time runs the first
    SEQUENTIAL requests of c1."""
    import gc

    a, b, c1 = reqs.get("A", []), reqs.get("B", []), reqs.get("c1", [])
    if {"hf-sequential", "hf-static"} - skip:
        model = hf_model(model_dir, dtype)
        pad = model.config.pad_token_id or 0
        if "hf-sequential" not in skip and c1:
            k = min(sequential, len(c1))
            add(hf_row("HF generate, one at a time", "c1", dtype,
                       lambda: run_static(model, c1[:k], 1, pad), f"first {k} requests"))
        if "hf-static" not in skip and a:
            zeros = [0.0] * len(a)  # A sends every request at once
            static = {bs: add(hf_row(f"HF generate, static batch {bs}", "A", dtype,
                                     lambda bs=bs: run_static(model, a, bs, pad, zeros)))
                      for bs in (8, 32)}
            bs = max(static, key=lambda k: static[k].tok_s or 0)
            if b:
                add(hf_row(static[bs].system, "B", dtype,
                           lambda: run_static(model, b, bs, pad, b_offsets), rate=b_rate))
        del model
        gc.collect()
    if "hf-cb" not in skip and a:
        model = hf_model(model_dir, dtype, attn="paged|sdpa")
        try:
            add(hf_row("HF continuous batching (paged|sdpa)", "A", dtype,
                       lambda: run_cb(model, a, max_batch_tokens)))
        except Exception as exc:  # a peer failing is a result, not a crash of the benchmark
            say(f"  HF continuous batching failed: {exc}")
        del model
        gc.collect()
