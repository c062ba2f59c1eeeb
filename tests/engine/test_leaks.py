"""No block leaks: many requests, random cancellations, preemption, and HTTP disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import random

import httpx
from engine_helpers import make_engine

from engine.sequence import SamplingParams


def test_pool_whole_after_1000_requests_with_cancellations(tiny_model):
    rng = random.Random(0)
    # A small pool: preemption happens too, and prefix blocks are evicted and reused.
    engine = make_engine(tiny_model, kv_cache_memory=16 * 16 * 2 * 4 * 2 * 32 * 4,
                         max_num_seqs=32, max_num_batched_tokens=256, max_waiting=2000)
    prefixes = [[rng.randrange(10, 4000) for _ in range(40)] for _ in range(5)]
    live: list[str] = []
    submitted = 0
    while submitted < 1000 or engine.has_work():
        for _ in range(min(rng.randint(0, 6), 1000 - submitted)):
            prompt = rng.choice(prefixes)[:rng.randint(1, 40)] + [
                rng.randrange(10, 4000) for _ in range(rng.randint(1, 24))]
            params = SamplingParams(temperature=rng.choice([0.0, 0.8]), seed=submitted,
                                    max_tokens=rng.randint(1, 8), ignore_eos=True)
            rid = f"r{submitted}"
            engine.add_request(rid, prompt, params)
            live.append(rid)
            submitted += 1
        for rid in rng.sample(live, k=min(len(live), rng.randint(0, 2))):
            engine.abort(rid)  # cancelled, wherever it is: waiting, prefilling, decoding
        engine.step()
        live = [r for r in live if r in engine.requests]
    bm = engine.block_manager
    assert submitted == 1000
    assert bm.is_whole(), f"{bm.num_blocks - bm.num_free} blocks still held"
    assert not engine.requests
    assert engine.metrics.success["abort"] > 50
    assert bm.prefix_hits > 0 and engine.scheduler.num_preemptions > 0
    for h, block_id in bm.hash_to_block.items():
        assert bm.blocks[block_id].hash == h


def test_http_disconnects_free_blocks(live):
    async def one(http: httpx.AsyncClient, i: int) -> None:
        rng = random.Random(i)
        body = {"model": "tiny", "prompt": "def f(x):\n" * rng.randint(1, 8),
                "max_tokens": rng.randint(20, 120), "ignore_eos": True}
        if i % 3 == 0:  # non-streaming, the client gives up early
            with contextlib.suppress(httpx.TimeoutException):
                await http.post("/v1/completions", json=body, timeout=rng.uniform(0.05, 0.5))
            return
        body["stream"] = True
        stop_after = rng.randint(1, 10) if i % 3 == 1 else None
        async with http.stream("POST", "/v1/completions", json=body) as r:
            n = 0
            async for line in r.aiter_lines():
                n += line.startswith("data: {")
                if stop_after is not None and n >= stop_after:
                    break  # disconnect mid-stream

    async def main() -> None:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as http:
            await asyncio.gather(*(one(http, i) for i in range(45)))

    asyncio.run(main())
    live.wait_idle(timeout=60)
    assert live.engine.block_manager.is_whole()
